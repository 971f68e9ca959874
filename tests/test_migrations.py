"""The migrations hold every model change: a field's length, an index, a key."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_migrations_match_the_models():
    # Without its migration a model change never reaches the database: the column
    # keeps its old length, the index is never built (or never dropped).
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:
        pytest.fail(f"a model change has no migration:\n{out.getvalue()}")
