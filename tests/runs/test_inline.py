"""runs.inline: where an embedded run executes, and so where its events are sent."""

import asyncio
import os
import socket
import threading
import uuid

import pytest
from asgiref.sync import async_to_sync

from runs import inline


async def _running_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def observed(monkeypatch, db):
    """Replaces the executor: records the thread a run executes on and the loop async_to_sync reaches.

    The run's thread still closes its stale database connections around the run: on SQLite in
    memory the test database's one connection is shared with it (on PostgreSQL the thread has
    none yet), so the test needs database access (``db``)."""
    seen = {}

    def execute_run(*, run_id, worker):
        seen["worker"] = worker
        seen["thread"] = threading.current_thread()
        seen["loop"] = async_to_sync(_running_loop)()  # what realtime.events.publisher.group_send does

    monkeypatch.setattr("runs.executor.execute_run", execute_run)
    monkeypatch.setattr(inline, "_server_loop", None)
    return seen


@pytest.fixture
def server_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_with_a_server_loop_a_run_executes_off_it_and_publishes_on_it(observed, server_loop):
    assert inline.bind_server_loop(server_loop) is True
    assert inline.bind_server_loop(server_loop) is False
    inline.submit(uuid.uuid4()).result(timeout=30)
    assert observed["thread"].name.startswith("run")  # blocking work off the loop's thread
    assert observed["loop"] is server_loop  # every event handed back to the server loop
    # Its steps name this web process as their worker (the run timeline shows it).
    assert observed["worker"] == f"web:{socket.gethostname()}:{os.getpid()}"


def test_without_a_server_loop_a_run_still_executes(observed):
    inline.submit(uuid.uuid4()).result(timeout=30)
    assert observed["thread"].name.startswith("run")
    assert observed["loop"].is_closed()  # a throwaway loop: no live client could be reached


def test_a_stopped_server_loop_is_not_used(observed):
    stopped = asyncio.new_event_loop()
    inline.bind_server_loop(stopped)
    try:
        inline.submit(uuid.uuid4()).result(timeout=30)
        assert observed["loop"] is not stopped and observed["loop"].is_closed()
    finally:
        stopped.close()


async def test_the_middleware_binds_the_loop_that_serves(monkeypatch):
    monkeypatch.setattr(inline, "_server_loop", None)
    monkeypatch.setattr(inline, "_reap_periodically", _never)
    monkeypatch.setattr(inline, "resume_interrupted", list)
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    middleware = inline.ServerLoopMiddleware(app)
    await middleware({"type": "http"}, None, None)
    assert calls == ["http"] and inline._server_loop is asyncio.get_running_loop()
    await middleware._resume
    middleware._reaper.cancel()


async def _never(interval):
    await asyncio.Event().wait()
