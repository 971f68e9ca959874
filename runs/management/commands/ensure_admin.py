"""manage.py ensure_admin: make sure a superuser exists, and print how to use it.

Run by `make run` before the server starts. The user comes from
DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD / DJANGO_SUPERUSER_EMAIL
when set (the password is kept in step with the variable); otherwise user
"admin" is created with a generated password, printed this once. Every time it
prints the login URL and the user's API token, for the README's curl examples.
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

DEFAULT_USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the admin user if missing (from DJANGO_SUPERUSER_*), print login URL and API token."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="The server's base URL, for the login link."
        )

    def handle(self, *args, url: str, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or DEFAULT_USERNAME
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or ""
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL") or ""
        with transaction.atomic():
            user, generated = self._ensure(username, password, email)
            token, _ = Token.objects.get_or_create(user=user)
        base = url.rstrip("/")
        out = self.stdout
        out.write(f"Admin user:  {user.get_username()}")
        if generated:
            out.write(f"Password:    {generated}   (generated; shown this once — keep it)")
        elif password:
            out.write("Password:    from DJANGO_SUPERUSER_PASSWORD")
        else:
            reset = f".venv/bin/python manage.py changepassword {user.get_username()}"
            out.write(f"Password:    as set before ({reset} resets it)")
        out.write(f"Watch runs:  {base}/   (log in, create a run, watch it live)")
        out.write(f"Log in:      {base}/admin/")
        out.write(f"API token:   {token.key}")
        out.write(f'Try it:      curl -H "Authorization: Token {token.key}" {base}/api/tools/')

    def _ensure(self, username: str, password: str, email: str):
        """The user (created or updated) and the generated password, if one was made now."""
        users = get_user_model()
        user = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
        generated = ""
        if user is None:
            if not password:
                password = generated = secrets.token_urlsafe(12)
            user = users.objects.create_superuser(username, email or "", password)
            return user, generated
        changed = []
        if not (user.is_staff and user.is_superuser and user.is_active):
            user.is_staff = user.is_superuser = user.is_active = True
            changed += ["is_staff", "is_superuser", "is_active"]
        if password and not user.check_password(password):
            user.set_password(password)
            changed.append("password")
        if email and user.email != email:
            user.email = email
            changed.append("email")
        if changed:
            user.save(update_fields=changed)
        return user, generated
