"""manage.py ensure_admin, which `make run` calls before serving."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def no_superuser_env(monkeypatch):
    for name in ("DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD", "DJANGO_SUPERUSER_EMAIL"):
        monkeypatch.delenv(name, raising=False)


def test_generates_a_password_once_and_prints_login_url_and_token(no_superuser_env):
    first = ensure_admin("--url", "http://127.0.0.1:9000/")
    password = re.search(r"Password:\s+(\S+)\s+\(generated", first).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password(password)
    assert "Log in:      http://127.0.0.1:9000/admin/" in first
    token = Token.objects.get(user=admin).key
    assert f"API token:   {token}" in first

    second = ensure_admin()
    assert password not in second and "generated" not in second
    assert f"API token:   {token}" in second  # the same token, every start
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_takes_the_user_from_django_superuser_variables(no_superuser_env, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct horse battery")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    out = ensure_admin()
    ops = get_user_model().objects.get(username="ops")
    assert ops.is_superuser and ops.email == "ops@example.com"
    assert ops.check_password("correct horse battery")
    assert "correct horse battery" not in out and "from DJANGO_SUPERUSER_PASSWORD" in out

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a new one, rotated")
    ensure_admin()
    assert get_user_model().objects.get(username="ops").check_password("a new one, rotated")


def test_promotes_an_existing_plain_user(no_superuser_env, monkeypatch):
    get_user_model().objects.create_user(username="admin", password="pw-before-123")
    out = ensure_admin()
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password("pw-before-123")
    assert "as set before" in out
