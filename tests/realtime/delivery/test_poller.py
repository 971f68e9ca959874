"""The process's poller: one query per tick for all watched runs, no channel layer needed."""

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime.delivery.poller import get_poller
from realtime.events import publisher
from realtime.protocol import frames
from realtime.reads import selectors
from realtime.sockets.run import RunConsumer
from runs import executor, services
from tests.realtime.support import (
    WAIT,
    check_frames,
    logged_frames,
    open_socket,
    poller_watchers,
    receive,
    receive_until_close,
    token_headers,
)

ECHO2 = [{"tool": "echo", "args": {"n": i}} for i in range(2)]

make_run = sync_to_async(lambda owner: services.run_create(owner=owner, steps=ECHO2))
execute = sync_to_async(lambda run_id: executor.execute_run(run_id=run_id))


@pytest.fixture
def poll_mode(settings):
    settings.REALTIME_MODE = "poll"
    settings.REALTIME_POLL_INTERVAL = 0.05
    return settings


@pytest.fixture
def poll_queries(monkeypatch):
    """Every poll the poller makes: (runs asked for, SQL queries it took), counted in its thread."""
    made = []
    original = selectors.events_after_cursors

    def counted(*, cursors):
        with CaptureQueriesContext(connection) as captured:
            found = original(cursors=cursors)
        made.append((len(cursors), len(captured.captured_queries)))
        return found

    monkeypatch.setattr(selectors, "events_after_cursors", counted)
    return made


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_100_connections_on_10_runs_cost_one_query_per_tick(user, token, poll_queries):
    runs = [await make_run(user) for _ in range(10)]
    sockets = []
    for run in runs:
        for _ in range(10):
            ws, connected = await open_socket(run.id, headers=token_headers(token))
            assert connected["payload"]["mode"] == "poll"
            sockets.append((run, ws))
    poller = get_poller()
    assert poller_watchers(poller) == 100 and len(poller.runs) == 10

    for run in runs:
        await execute(run.id)
    for run, ws in sockets:
        frames, code = await receive_until_close(ws)
        assert code == 1000
        check_frames(frames, run_id=run.id, first_seq=1)
        assert frames == await logged_frames(run.id)

    await _stopped(poller)
    assert len(poll_queries) > 0
    # Busy or idle (the quiet runs' delete check is in the same statement), one query a tick;
    # SQLite's portable path looks the quiet runs up in a second one.
    most = 1 if connection.vendor == "postgresql" else 2
    assert all(1 <= queries <= most for _, queries in poll_queries), poll_queries
    # Each tick asked for all the watched runs at once, never per connection.
    assert all(asked <= 10 for asked, _ in poll_queries)
    assert max(asked for asked, _ in poll_queries) == 10
    assert poller_watchers(poller) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched")
def test_the_poll_query_reads_each_run_from_its_own_cursor(user):
    a = services.run_create(owner=user, steps=ECHO2)
    b = services.run_create(owner=user, steps=ECHO2)
    executor.execute_run(run_id=a.id)  # seq 1..6
    executor.execute_run(run_id=b.id)
    with CaptureQueriesContext(connection) as captured:
        found = selectors.events_after_cursors(cursors={a.id: 4, b.id: 0})
    assert len(captured.captured_queries) == 1
    # Each run's events together and in seq order (the runs in any order).
    expected = {a.id: [(a.id, 5), (a.id, 6)], b.id: [(b.id, s) for s in range(1, 7)]}
    pairs = [(e.run_id, e.seq) for e in found.events]
    first, second = (a.id, b.id) if pairs[0][0] == a.id else (b.id, a.id)
    assert pairs == expected[first] + expected[second]
    assert found.gone == set()
    assert selectors.events_after_cursors(cursors={}) == ([], set())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched")
def test_a_poll_of_many_runs_is_one_statement_on_postgresql(user):
    # One statement text whatever the count (planned once), not the portable path's
    # OR'ed conditions in chunks of 200.
    assert connection.vendor == "postgresql"
    run = services.run_create(owner=user, steps=ECHO2)
    executor.execute_run(run_id=run.id)
    missing = {uuid.uuid4(): 0 for _ in range(449)}
    cursors = missing | {run.id: 4}
    with CaptureQueriesContext(connection) as captured:
        found = selectors.events_after_cursors(cursors=cursors)
    assert len(captured.captured_queries) == 1
    assert [(e.run_id, e.seq) for e in found.events] == [(run.id, 5), (run.id, 6)]
    assert found.gone == set(missing)  # the runs that do not exist, told in the same statement


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched")
def test_a_poll_tells_a_deleted_run_from_a_quiet_one(user):
    quiet, deleted, busy = (services.run_create(owner=user, steps=ECHO2) for _ in range(3))
    for run in (quiet, deleted, busy):
        executor.execute_run(run_id=run.id)  # seq 1..6
    services.run_delete(run_id=deleted.id)
    with CaptureQueriesContext(connection) as captured:
        found = selectors.events_after_cursors(cursors={quiet.id: 6, deleted.id: 6, busy.id: 5})
    assert [(e.run_id, e.seq) for e in found.events] == [(busy.id, 6)]
    assert found.gone == {deleted.id}
    # An idle poll is one statement on PostgreSQL (SQLite looks the quiet runs up in a second).
    assert len(captured.captured_queries) == (1 if connection.vendor == "postgresql" else 2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched")
def test_polled_frames_are_byte_for_byte_the_pushed_frames(user):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"text": "é ✓", "n": [1, 2.5]}}])
    executor.execute_run(run_id=run.id)
    logged = selectors.events_between(run_id=run.id, after=0)
    polled = selectors.events_after_cursors(cursors={run.id: 0}).events
    assert [frames.encode_event(e) for e in polled] == [frames.encode_event(e) for e in logged]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_poll_mode_needs_no_channel_layer(settings, monkeypatch, user, token):
    """No layer configured at all, and any publish attempt would fail: poll still delivers."""
    settings.CHANNEL_LAYERS = {}
    channel_layers.backends = {}

    def no_layer(group, message):
        raise AssertionError("poll mode must not publish")

    monkeypatch.setattr(publisher, "group_send", no_layer)
    try:
        run = await make_run(user)
        ws, connected = await open_socket(run.id, headers=token_headers(token))
        assert connected["payload"]["mode"] == "poll"
        await execute(run.id)
        frames, code = await receive_until_close(ws)
        assert code == 1000
        assert frames == await logged_frames(run.id)
    finally:
        channel_layers.backends = {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_the_poller_starts_with_the_first_watcher_and_stops_after_the_last(user, token):
    run = await make_run(user)
    poller = get_poller()
    assert poller._task is None
    first, _ = await open_socket(run.id, headers=token_headers(token))
    second, _ = await open_socket(run.id, headers=token_headers(token))
    for ws in (first, second):
        await ws.send_to(text_data='{"type": "ping"}')
        assert (await receive(ws))["type"] == "pong"
    assert poller._task is not None and poller_watchers(poller) == 2
    await first.disconnect()
    assert poller_watchers(poller) == 1
    await second.disconnect()
    assert poller_watchers(poller) == 0
    await _stopped(poller)
    assert poller._task is None


async def _stopped(poller) -> None:
    """Wait (bounded) for the poller's task to end once it has no watchers."""
    for _ in range(int(WAIT / 0.01)):
        if poller._task is None:
            return
        await asyncio.sleep(0.01)


def test_a_run_streams_delivery_follows_the_mode(settings):
    """Each connection takes the delivery policy of settings.REALTIME_MODE when it starts."""
    settings.REALTIME_POLL_INTERVAL, settings.REALTIME_FALLBACK_INTERVAL = 2.0, 10.0
    for mode, push, interval in (("push", True, None), ("poll", False, 2.0), ("hybrid", True, 10.0)):
        settings.REALTIME_MODE = mode
        consumer = RunConsumer()
        consumer.init_state()
        policy = consumer.stream.policy
        assert (policy.mode, policy.push, policy.live_poll_interval) == (mode, push, interval)
        assert consumer.uses_channel_layer is push  # polling needs no channel layer
        assert policy.poll_interval(layer_down=True) == 2.0


@pytest.mark.parametrize("value", ["legacy", "pull", "websocket"])
def test_a_bad_realtime_mode_stops_start_up_with_a_clear_message(value):
    env = {**os.environ, "REALTIME_MODE": value, "DJANGO_SETTINGS_MODULE": "quikday.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"REALTIME_MODE must be one of push, poll, hybrid; got {value!r}" in done.stderr
