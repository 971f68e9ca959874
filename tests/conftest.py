"""Shared fixtures: users, API clients, and captured run dispatches."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.processes import daphne_process, worker_process  # noqa: F401 - fixtures for real processes


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
