"""observability.health: GET /healthz in process (the database, the broker, each channel-layer shard).

The Procfile's web command answering /healthz for real is in tests/test_deploy.py.
"""

from __future__ import annotations

import socket
import time

import pytest
from django.db import OperationalError
from django.test import Client

from observability import health
from tests.realtime.own_redis import OwnRedis


@pytest.fixture
def no_redis(settings):
    """The embedded shape: no broker, the channel layer in memory."""
    settings.REDIS_URL = settings.CELERY_BROKER_URL = ""
    settings.REALTIME_REDIS_URLS = []


@pytest.fixture
def own_redis_servers():
    """Redis servers of the test's own (three: a broker and two channel-layer shards), started."""
    servers = [OwnRedis() for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _redis_config(settings, *, broker: str, shards: list[str]) -> None:
    settings.REDIS_URL = shards[0]
    settings.CELERY_BROKER_URL = broker
    settings.REALTIME_REDIS_URLS = shards


@pytest.mark.django_db
def test_healthz_ok_without_redis_configured(no_redis):
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "database": "ok", "redis": "not configured", "mode": body["mode"]}


@pytest.mark.redis
@pytest.mark.django_db
def test_healthz_checks_every_shard_and_names_the_one_that_is_down(settings, own_redis_servers):
    broker, first, second = own_redis_servers
    _redis_config(settings, broker=broker.url, shards=[first.url, second.url])
    response = Client().get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["channel_layer"] == ["ok", "ok"] and response.json()["broker"] == "ok"

    second.stop()
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    body.pop("mode")
    assert body == {
        "status": "error",
        "database": "ok",
        "redis": "unavailable",
        "broker": "ok",
        "channel_layer": ["ok", "unavailable"],
        "failed": ["channel_layer[1]"],
    }
    assert second.url not in response.content.decode()  # servers are named by position, never by URL


@pytest.mark.redis
@pytest.mark.django_db
def test_healthz_is_503_naming_the_broker_when_it_does_not_answer(settings, own_redis_servers):
    broker, first, second = own_redis_servers
    _redis_config(settings, broker=broker.url, shards=[first.url, second.url])
    broker.stop()
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert (body["broker"], body["channel_layer"], body["failed"]) == (
        "unavailable",
        ["ok", "ok"],
        ["broker"],
    )


@pytest.mark.django_db
def test_healthz_asks_the_servers_in_parallel_each_with_a_short_timeout(settings):
    """Three servers that accept connections and never answer: the probe waits about one
    timeout, not one per server (nor redis-py's retries of each)."""
    hung = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        broker, *shards = (f"redis://127.0.0.1:{s.getsockname()[1]}/0" for s in hung)
        _redis_config(settings, broker=broker, shards=shards)
        started = time.monotonic()
        response = Client().get("/healthz")
        took = time.monotonic() - started
    finally:
        for server in hung:
            server.close()
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker", "channel_layer[0]", "channel_layer[1]"]
    assert took < 2.5 * health.REDIS_TIMEOUT_SECONDS, took  # one after the other: 3 timeouts at least


@pytest.mark.django_db
def test_healthz_is_503_naming_the_database_when_it_does_not_answer(no_redis, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("observability.health.connection.cursor", broken_cursor)
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "unavailable" and body["failed"] == ["database"]


@pytest.mark.django_db
def test_healthz_answers_get_and_head_only(no_redis):
    client = Client()
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405
