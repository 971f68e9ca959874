"""manage.py ensure_database: create DATABASE_URL's PostgreSQL database if it is missing.

Run by `make dev` before migrating, so the full stack starts on a PostgreSQL
that has never seen the project. It connects to the server's maintenance
database with the same credentials (as Django's test runner does to create its
test database). Any other database engine creates its database itself: nothing
to do.
"""

from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Create DATABASE_URL's PostgreSQL database if it does not exist yet."

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            return
        name = connection.settings_dict["NAME"]
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                return
            cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)}")
        self.stdout.write(f"Created the database {name!r}.")
