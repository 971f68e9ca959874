"""A connect racing with saves sees every seq exactly once, in order.

Two ways: the two dangerous moments forced deterministically (an event that
commits between joining the group and reading the snapshot, and one that
commits between the snapshot and `connected`), and a writer thread committing
a long run's events while clients keep connecting — each of its batches forced
into one of those two moments of some client's connect.
"""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from realtime.reads import selectors
from realtime.sockets.run import RunStream
from runs import services
from tests.realtime.support import (
    WAIT,
    apply_events,
    check_frames,
    fresh_snapshot,
    open_socket,
    receive,
    receive_until_close,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("layer", "dispatched"),
]


def _new_run(user, steps: int):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(steps)])
    services.run_start(run_id=run.id)
    return run


async def test_events_committed_around_the_snapshot_are_sent_once(user, token, monkeypatch):
    """Also kills: `connected` and the backlog sent without holding the delivery lock.

    The snapshot read waits (a named point) until the hub has handed seq 2 to
    this watcher: a delivery that does not wait for `connected` has gone out by then.
    """
    run = await sync_to_async(_new_run)(user, 2)  # seq 1
    original = selectors.connect_state
    handed = threading.Event()
    real_deliver = RunStream.on_event

    async def deliver_noting_the_hand_over(self, seq, text, *, final):
        if self.deliver_lock.locked():
            handed.set()  # it waits for `connected`
            await real_deliver(self, seq, text, final=final)
        else:
            await real_deliver(self, seq, text, final=final)  # nothing holds it back: it goes out now
            handed.set()

    def racing_connect_state(*, run_id, since, **who):
        # Joined, not yet read: this event is relayed AND in the snapshot.
        services.step_start(run_id=run.id, index=0)  # seq 2
        assert handed.wait(WAIT), "the hub never handed seq 2 to the connecting watcher"
        state = original(run_id=run_id, since=since, **who)
        # Read, `connected` not yet sent: relayed only, after `connected`.
        services.step_succeed(run_id=run.id, index=0, output=None)  # seq 3
        return state

    monkeypatch.setattr(RunStream, "on_event", deliver_noting_the_hand_over)
    monkeypatch.setattr(selectors, "connect_state", racing_connect_state)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    monkeypatch.setattr(selectors, "connect_state", original)
    try:
        assert (connected["type"], connected["seq"]) == ("connected", 2)
        assert connected["payload"]["run"]["steps"][0]["status"] == "running"
        await sync_to_async(services.step_start)(run_id=run.id, index=1)  # seq 4
        frames = [await receive(ws) for _ in range(2)]
        assert [(f["type"], f["seq"]) for f in frames] == [("step_succeeded", 3), ("step_started", 4)]
        assert apply_events(connected["payload"]["run"], frames) == await fresh_snapshot(run.id)
    finally:
        await ws.disconnect()


STEPS = 15  # 1 run_status + 2 per step + 1 run_completed = 32 events
CLIENTS = 8


def _writer(run_id, turns: threading.Semaphore, committed: threading.Semaphore) -> None:
    """Commit the run's events a batch at a time, each when a connecting client asks for it."""
    try:
        for index in range(STEPS):
            assert turns.acquire(timeout=WAIT), "no client asked for the next batch"
            services.step_start(run_id=run_id, index=index)
            services.step_succeed(run_id=run_id, index=index, output={"n": index})
            committed.release()
        assert turns.acquire(timeout=WAIT), "no client asked for the last batch"
        services.run_succeed(run_id=run_id, output=[{"n": i} for i in range(STEPS)])
        committed.release()
    finally:
        connection.close()  # this thread's own connection


async def _client(run_id, token) -> tuple[dict, list[dict], int]:
    ws, connected = await open_socket(run_id, headers=token_headers(token))
    try:
        frames, code = await receive_until_close(ws)
    finally:
        await ws.disconnect()
    return connected, frames, code


async def test_clients_connecting_while_a_writer_commits_see_every_seq_once(user, token, monkeypatch):
    run = await sync_to_async(_new_run)(user, STEPS)
    turns, committed = threading.Semaphore(0), threading.Semaphore(0)
    original = selectors.connect_state

    def commit_a_batch() -> None:
        turns.release()
        assert committed.acquire(timeout=WAIT), "the writer did not commit its batch"

    def connect_state_between_batches(**kwargs):
        # The two dangerous moments of every connect, each with a batch committed in it:
        commit_a_batch()  # joined, snapshot not read yet
        state = original(**kwargs)
        commit_a_batch()  # snapshot read, `connected` not sent yet
        return state

    monkeypatch.setattr(selectors, "connect_state", connect_state_between_batches)
    writer = threading.Thread(target=_writer, args=(run.id, turns, committed))
    writer.start()
    try:
        # 8 clients x 2 moments = the writer's 16 batches (15 steps and run_completed).
        results = await asyncio.gather(*(_client(run.id, token) for _ in range(CLIENTS)))
    finally:
        for _ in range(STEPS + 1):
            turns.release()  # a failed client must not leave the writer waiting
        await asyncio.get_running_loop().run_in_executor(None, writer.join, WAIT)
    assert not writer.is_alive()

    total = 2 + 2 * STEPS
    final = await fresh_snapshot(run.id)
    assert final["seq"] == total and final["status"] == "succeeded"
    for connected, frames, code in results:
        start = connected["seq"]
        assert code == 1000
        check_frames(frames, run_id=run.id, first_seq=start + 1)
        assert [f["seq"] for f in frames] == list(range(start + 1, total + 1))
        if frames:
            assert frames[-1]["type"] == "run_completed"
        assert apply_events(connected["payload"]["run"], frames) == final
