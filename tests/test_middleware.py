"""A lost database connection is a 503 with Retry-After on every path, in process and deterministic.

quikday/middleware.py answers for the pages, runs/api/errors.py for the API (DRF handles a view's
errors before any middleware sees them). The e2e tests
(tests/scenarios/test_database_faults_e2e.py) terminate real backends under load, where whether a
request meets a dead connection is up to the timing; here the view's read fails on every run.
"""

import logging
import uuid

import pytest
from django.db import DatabaseError, InterfaceError, OperationalError

from runs import selectors

pytestmark = pytest.mark.django_db

UNAVAILABLE = {"error": "unavailable", "message": "the database is briefly unavailable; try again"}
LOST = [OperationalError("server closed the connection"), InterfaceError("connection already closed")]


@pytest.fixture
def reads_fail(monkeypatch):
    """Every read of a run raises ``error``."""

    def set_error(error: Exception) -> None:
        def read(**kwargs):
            raise error

        monkeypatch.setattr(selectors, "run_get_for_user", read)

    return set_error


@pytest.mark.parametrize("error", LOST, ids=["operational", "interface"])
def test_a_page_that_loses_the_database_is_a_503_with_retry_after(client, user, reads_fail, caplog, error):
    client.force_login(user)
    reads_fail(error)
    path = f"/runs/{uuid.uuid4()}/"
    with caplog.at_level(logging.WARNING):
        response = client.get(path)
    assert (response.status_code, response["Retry-After"], response.json()) == (503, "1", UNAVAILABLE)
    said = [(r.name, r.getMessage()) for r in caplog.records if r.name == "quikday.middleware"]
    assert said == [("quikday.middleware", f"database unavailable during GET {path}: {error}")]


def test_a_pages_other_database_error_is_no_503(client, user, reads_fail):
    """Only a lost connection is worth a retry: a query's own error stays a server error (500, JSON)."""
    client.force_login(user)
    client.raise_request_exception = False  # answered as a client sees it
    reads_fail(DatabaseError("bad query"))
    response = client.get(f"/runs/{uuid.uuid4()}/")
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "message": "internal error; it has been logged"}


@pytest.mark.parametrize("error", LOST, ids=["operational", "interface"])
def test_an_api_read_that_loses_the_database_is_a_503_with_retry_after(api, reads_fail, caplog, error):
    reads_fail(error)
    with caplog.at_level(logging.WARNING):
        response = api.get(f"/api/runs/{uuid.uuid4()}/")
    assert (response.status_code, response["Retry-After"], response.json()) == (503, "1", UNAVAILABLE)
    said = [r.getMessage() for r in caplog.records if r.name == "runs.api.errors"]
    assert said == [f"database unavailable in the API: {error}"]


def test_an_api_reads_other_database_error_is_a_json_500(api, reads_fail, caplog):
    reads_fail(DatabaseError("bad query"))
    with caplog.at_level(logging.ERROR):
        response = api.get(f"/api/runs/{uuid.uuid4()}/")
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "message": "internal error; it has been logged"}
