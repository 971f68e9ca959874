"""Helpers of the realtime tests: sockets, frames, the client's reducer, verify_action.

``apply_events`` is the reducer documented in docs/protocol.md ("Keeping a
copy of the run"): what a client does with each frame. ``verify_action``
(after Zulip's test helper of that name) checks that the snapshot a client
got on connect, with the events that followed applied, equals a snapshot read
fresh from the database.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from websockets.exceptions import ConnectionClosed

from quikday import asgi
from realtime.events import publisher
from realtime.protocol import frames as wire
from realtime.reads import selectors, threads
from runs.inline import ServerLoopMiddleware
from runs.models import Run, Step
from runs.serializers import StepSerializer

# The tests connect to the routes the server serves, without the server's process start-up
# (the reporter thread, asgi.StartsReporter). And they drive their runs themselves: without
# Redis (embedded mode) the routes are wrapped in the embedded executor's middleware, which
# would also resume and reap those runs, so they connect to what it wraps.
application = asgi.application.app
if isinstance(application, ServerLoopMiddleware):
    application = application.app

# Bounds on waiting for something that must happen, not timing assertions.
WAIT = 10.0

# A test of processes of its own (Daphne, redis-servers) on the real PostgreSQL and
# Redis, its runs' tasks captured by the `dispatched` fixture: `pytestmark = LIVE_STACK`.
LIVE_STACK = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.usefixtures("dispatched"),
]
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
FRAME_KEYS = {"type", "run_id", "seq", "ts", "payload"}


def statements_counted(fn: Callable[..., Any]) -> Callable[..., tuple[Any, int]]:
    """``fn`` answering (its result, the SQL statements it made on its thread's connection)."""

    def counted(**kwargs):
        with CaptureQueriesContext(connection) as captured:
            result = fn(**kwargs)
        return result, len(captured.captured_queries)

    return counted


def token_headers(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {key}".encode())]


def as_json(value: Any) -> Any:
    """``value`` as a client sees it after JSON decoding."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


async def open_socket(
    run_id: uuid.UUID | str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: str = "",
) -> tuple[WebsocketCommunicator, dict]:
    """Connect to /ws/runs/<run_id>/ and return the socket and its first frame."""
    path = f"/ws/runs/{run_id}/" + (f"?{query}" if query else "")
    ws = WebsocketCommunicator(application, path, headers=headers or [])
    try:
        connected, _ = await ws.connect(timeout=WAIT)
        assert connected, "the handshake was refused"
        return ws, await receive(ws)
    except BaseException:
        await close_socket(ws)  # the caller never gets it: close it here
        raise


async def close_socket(ws: WebsocketCommunicator) -> None:
    """Disconnect ``ws`` and wait (bounded) for its application to end; never raises.

    For finally blocks and fixtures: closing twice, or after the server closed
    or the application failed, is fine.
    """
    try:
        await ws.disconnect(timeout=WAIT)
    except Exception:  # cleanup after a failure must not hide that failure
        if not ws.future.done():
            ws.future.cancel()


async def receive(ws: WebsocketCommunicator) -> dict:
    frame = json.loads(await ws.receive_from(timeout=WAIT))
    assert set(frame) == FRAME_KEYS, frame
    assert TS.match(frame["ts"]), frame["ts"]
    return frame


async def receive_close(ws: WebsocketCommunicator) -> int:
    """Wait for the server to close the socket; return the close code."""
    message = await ws.receive_output(timeout=WAIT)
    assert message["type"] == "websocket.close", message
    return message.get("code", 1000)


async def receive_until_close(ws: WebsocketCommunicator) -> tuple[list[dict], int]:
    """Every frame up to the close, and the close code."""
    frames = []
    while True:
        message = await ws.receive_output(timeout=WAIT)
        if message["type"] == "websocket.close":
            return frames, message.get("code", 1000)
        frames.append(json.loads(message["text"]))


class LiveClient:
    """A `websockets` client of a real server: every frame it got, over however many sockets."""

    def __init__(self, ws, frames: list[dict] | None = None) -> None:
        self.ws, self.frames = ws, list(frames or [])

    def events(self) -> list[dict]:
        return [f for f in self.frames if f["type"] != "connected"]

    async def read(self, count: int, timeout: float = 60.0) -> None:
        for _ in range(count):
            self.frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))

    async def read_to_close(self, timeout: float = 60.0) -> int | None:
        """Every frame up to the close; the close code (1006 when the server died)."""
        try:
            async with asyncio.timeout(timeout):
                async for message in self.ws:
                    self.frames.append(json.loads(message))
        except ConnectionClosed:
            pass
        return self.ws.close_code


# --- The client's reducer (docs/protocol.md) -------------------------------------


def apply_event(run: dict, frame: dict) -> dict:
    """Apply one event frame to a client's copy of the run (the `connected` snapshot)."""
    kind, payload = frame["type"], frame["payload"]
    if kind == wire.RUN_STATUS:
        run["status"] = payload["status"]
        run["started_at"] = payload["started_at"]
    elif kind in (
        wire.STEP_STARTED,
        wire.STEP_RETRIED,
        wire.STEP_SUCCEEDED,
        wire.STEP_FAILED,
        wire.STEP_SKIPPED,
    ):
        step = payload["step"]
        others = [s for s in run["steps"] if s["index"] != step["index"]]
        run["steps"] = sorted([*others, step], key=lambda s: s["index"])
    elif kind == wire.RUN_COMPLETED:
        for key in ("status", "output", "error", "started_at", "finished_at"):
            run[key] = payload[key]
    else:
        raise AssertionError(f"not an event frame: {frame}")
    run["seq"] = frame["seq"]
    return run


def apply_events(run: dict, frames: list[dict]) -> dict:
    run = copy.deepcopy(run)
    for frame in frames:
        apply_event(run, frame)
    return run


# --- Reading the truth -----------------------------------------------------------


@sync_to_async
def fresh_snapshot(run_id) -> dict:
    snapshot = selectors.run_snapshot(run_id=run_id)
    assert snapshot.run["seq"] == snapshot.seq
    return as_json(snapshot.run)


@sync_to_async
def logged_frames(run_id, after: int = 0) -> list[dict]:
    """The run's events after ``after`` as the log holds them, as frames."""
    return as_json([wire.event_frame(e) for e in selectors.events_between(run_id=run_id, after=after)])


@sync_to_async
def step_json(run_id, index: int) -> dict:
    return as_json(StepSerializer(Step.objects.get(run_id=run_id, index=index)).data)


@sync_to_async
def completed_payload(run_id) -> dict:
    run = Run.objects.get(pk=run_id)
    return {
        "status": run.status,
        "output": as_json(run.output),
        "error": run.error,
        "started_at": wire.format_ts(run.started_at) if run.started_at else None,
        "finished_at": wire.format_ts(run.finished_at) if run.finished_at else None,
    }


@sync_to_async
def run_seq(run_id) -> int:
    return Run.objects.values_list("seq", flat=True).get(pk=run_id)


def check_frames(frames: list[dict], *, run_id, first_seq: int) -> None:
    """Shape, run id and contiguous seq of event frames."""
    assert [f["seq"] for f in frames] == list(range(first_seq, first_seq + len(frames)))
    for frame in frames:
        assert set(frame) == FRAME_KEYS
        assert frame["run_id"] == str(run_id)
        assert frame["type"] in wire.EVENT_TYPES
        assert TS.match(frame["ts"]), frame["ts"]


async def verify_action(
    run_id,
    action: Callable[[], Any],
    *,
    headers: list[tuple[bytes, bytes]],
    count: int,
) -> list[dict]:
    """Connect, perform ``action`` (sync), and return the ``count`` frames it pushed.

    Checks: the frames are exactly the events the action logged (nothing more,
    nothing less, same bytes as the log), their seqs follow the snapshot's,
    and snapshot + frames (through the reducer) == a fresh snapshot. A run
    that ends closes the socket with 1000 after its run_completed.
    """
    ws, connected = await open_socket(run_id, headers=headers)
    try:
        assert connected["type"] == "connected"
        assert connected["payload"]["recovered"] is False
        assert connected["payload"]["mode"] == settings.REALTIME_MODE
        start = connected["seq"]
        assert connected["payload"]["run"] == await fresh_snapshot(run_id)

        await sync_to_async(action)()
        frames = [await receive(ws) for _ in range(count)]

        check_frames(frames, run_id=run_id, first_seq=start + 1)
        assert frames == await logged_frames(run_id, after=start), "pushed frames differ from the log"
        assert await run_seq(run_id) == start + count, "the action logged more events than were pushed"
        assert apply_events(connected["payload"]["run"], frames) == await fresh_snapshot(run_id)
        if frames and frames[-1]["type"] == wire.RUN_COMPLETED:
            assert await receive_close(ws) == 1000
        return frames
    finally:
        await ws.disconnect()


def poller_watchers(poller) -> int:
    """How many sockets ``poller`` polls for, over all its runs."""
    return sum(len(watchers) for watchers in poller.runs.values())


def discard_pending_retries() -> int:
    """Cancel this process's background re-publishes (a test's must not reach the next); how many."""
    pending = list(publisher._retry_futures)
    for future in pending:
        future.cancel()
    return len(pending)


def close_read_thread_connections() -> None:
    """Close the database connection of each of realtime.reads.threads's read threads that exists."""
    if threads._threads is not None:
        for executor in threads._threads.executors:
            executor.submit(connections.close_all).result(timeout=10)
