"""The bench's baseline (bench/legacy.py): served by the bench's own ASGI application only."""

import json
import os

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from bench import legacy
from bench.modes import BY_KEY, probe
from realtime.delivery.poller import get_poller
from realtime.routing import websocket_urlpatterns
from runs import executor, services
from tests.realtime.support import (
    WAIT,
    logged_frames,
    poller_watchers,
    receive,
    receive_until_close,
    token_headers,
)

ECHO2 = [{"tool": "echo", "args": {"n": i}} for i in range(2)]


@pytest.fixture
def poll_mode(settings):
    settings.REALTIME_MODE = "poll"
    settings.REALTIME_POLL_INTERVAL = 0.05
    return settings


def test_the_product_never_routes_to_the_legacy_consumer(settings, monkeypatch):
    monkeypatch.setenv("REALTIME_BENCH_LEGACY_POLL", "1")  # the switch that used to exist
    for mode in ("push", "poll", "hybrid"):
        settings.REALTIME_MODE = mode
        for route in websocket_urlpatterns:
            consumer = getattr(route.callback, "consumer_class", None)
            assert consumer is None or not issubclass(consumer, legacy.LegacyPollingConsumer)
            if consumer is not None and hasattr(consumer, "init_state"):
                instance = consumer()
                instance.init_state()
                assert not isinstance(instance.stream, legacy.LegacyPollingStream)


def test_the_bench_probe_finds_the_legacy_consumer_in_mode_a():
    mode = BY_KEY["legacy"]
    assert mode.asgi_app == "bench.legacy:application"
    found = probe({**os.environ, **mode.env}, mode.routing)
    assert found == {"cls": "bench.legacy.LegacyPollingConsumer", "mode": "poll"}, json.dumps(found)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_the_legacy_baseline_speaks_the_protocol_but_polls_per_connection(user, token):
    """Same frames, but no shared poller (each socket queries on its own)."""
    run = await sync_to_async(services.run_create)(owner=user, steps=ECHO2)
    sockets = []
    try:
        for _ in range(3):
            ws = WebsocketCommunicator(
                legacy.application, f"/ws/runs/{run.id}/", headers=token_headers(token)
            )
            sockets.append(ws)
            connected, _ = await ws.connect(timeout=WAIT)
            assert connected
            assert (await receive(ws))["type"] == "connected"  # its snapshot is read: seq 0
        assert poller_watchers(get_poller()) == 0
        await sync_to_async(executor.execute_run)(run_id=run.id)
        for ws in sockets:
            frames, code = await receive_until_close(ws)
            assert code == 1000
            assert frames == await logged_frames(run.id)
    finally:
        for ws in sockets:
            await ws.disconnect()
