"""Shared fixtures: users, API clients, and captured run dispatches."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.processes import _module_daphne, daphne_process, worker_process  # noqa: F401 - fixtures for real processes


@pytest.fixture
def dispatched(monkeypatch):
    """Runs handed to the executor, captured instead of executed (unit tests)."""
    sent = []
    monkeypatch.setattr("runs.dispatch._send", sent.append)
    return sent


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="pw-bob-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="root", password="pw-root-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def token(user):
    return Token.objects.create(user=user).key


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite, a test database in a file (WAL, as `make run` has), not Django's shared in-memory one.

    Threads of the process (realtime.reads.threads, embedded runs) keep their
    own connections: a shared-cache in-memory database locks whole tables
    against them ("database table is locked"); a file in WAL mode lets readers
    and the one writer overlap as in embedded mode.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")
