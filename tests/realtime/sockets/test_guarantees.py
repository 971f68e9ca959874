"""Guarantees a user would see broken, each forced deterministically and checked frame by frame.

Every test here was written against a one-line regression ("mutant") that the
rest of the suite let through (docs/testing.md lists them); each fails with
its mutant in place. Interleavings are forced at named points with
threading/asyncio events, never with sleeps: a test that waits for something
that does not come fails after ``WAIT`` seconds, it does not hang.
"""

import asyncio
import re
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from realtime.delivery.hub import get_hub
from realtime.delivery.poller import Poller
from realtime.events import log, publisher, retention
from realtime.models import RunEvent
from realtime.protocol.close_codes import CLOSE_NORMAL
from realtime.protocol.frames import group_name
from realtime.reads import selectors
from runs import services
from runs.models import Run
from tests.realtime.support import (
    WAIT,
    check_frames,
    close_socket,
    logged_frames,
    open_socket,
    receive,
    receive_until_close,
    run_seq,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
]


@pytest.fixture
def push(settings, layer):
    """Push mode alone: no poller behind the channel layer to hide a lost event."""
    settings.REALTIME_MODE = "push"
    return layer


def _started_run(user, steps: int = 2):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(steps)])
    services.run_start(run_id=run.id)  # seq 1
    return run


def _do_step(run_id, index: int) -> None:
    services.step_start(run_id=run_id, index=index)
    services.step_succeed(run_id=run_id, index=index, output={"n": index})


async def _wait_in_thread(event: threading.Event, what: str) -> None:
    """Wait (bounded) for a thread to reach a named point, without blocking the event loop."""
    reached = await asyncio.get_running_loop().run_in_executor(None, event.wait, WAIT)
    assert reached, f"never reached: {what}"


# --- Subscribe before the snapshot (the last event is the one gap fill cannot save) ---


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_the_final_event_committed_between_the_snapshot_and_connected_arrives(user, token, monkeypatch):
    """Kills: the consumer subscribing after its snapshot read instead of before it.

    run_completed commits after the snapshot was read and before the watcher
    could have joined in that order: nothing follows it, so only a watcher
    already in the group when it was published can relay it.
    """
    run = await sync_to_async(_started_run)(user, steps=1)
    await sync_to_async(_do_step)(run.id, 0)  # seq 2, 3
    snapshot_read, resume = threading.Event(), threading.Event()
    original = selectors.connect_state

    def connect_state_then_wait(**kwargs):
        state = original(**kwargs)
        snapshot_read.set()  # named point: the snapshot is read, `connected` not yet sent
        assert resume.wait(WAIT), "the test never let the connect go on"
        return state

    monkeypatch.setattr(selectors, "connect_state", connect_state_then_wait)
    connecting = asyncio.create_task(open_socket(run.id, headers=token_headers(token)))
    ws = None
    try:
        await _wait_in_thread(snapshot_read, "the snapshot read")
        await sync_to_async(services.run_succeed)(run_id=run.id, output=[{"n": 0}])  # seq 4, published
        resume.set()
        ws, connected = await connecting
        assert (connected["type"], connected["seq"]) == ("connected", 3)
        assert connected["payload"]["run"]["status"] == "processing"
        frames, code = await receive_until_close(ws)
        assert frames == await logged_frames(run.id, after=3)
        assert [f["type"] for f in frames] == ["run_completed"] and code == 1000
    finally:
        resume.set()
        if ws is None:
            connecting.cancel()
        else:
            await ws.disconnect()


# --- The hub's group membership is the process's, not one watcher's --------------------


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_one_of_two_watchers_leaving_mid_run_leaves_the_other_every_event(user, token):
    """Kills: the hub leaving a run's group when any (not the last) local watcher leaves."""
    run = await sync_to_async(_started_run)(user, steps=2)
    leaving, _ = await open_socket(run.id, headers=token_headers(token))
    staying, left = None, False
    try:
        staying, connected = await open_socket(run.id, headers=token_headers(token))
        assert connected["seq"] == 1
        await sync_to_async(services.step_start)(run_id=run.id, index=0)  # seq 2: both watchers get it
        assert await receive(leaving) == await receive(staying)
        await leaving.disconnect()  # returns once its consumer has left the hub
        left = True

        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output={"n": 0})
        await sync_to_async(_do_step)(run.id, 1)
        await sync_to_async(services.run_succeed)(run_id=run.id, output=[{"n": 0}, {"n": 1}])
        frames, code = await receive_until_close(staying)
        check_frames(frames, run_id=run.id, first_seq=3)
        assert frames == await logged_frames(run.id, after=2)
        assert frames[-1]["type"] == "run_completed" and code == 1000
    finally:
        if not left:
            await leaving.disconnect()
        if staying is not None:
            await staying.disconnect()


# --- Seq comes from the run's counter, not from what is left of the log --------------


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_seq_goes_on_after_retention_prunes_a_live_runs_events(user, token):
    """Kills: the next seq taken as MAX(seq) + 1 over the log instead of the run's counter."""
    run = await sync_to_async(_started_run)(user, steps=1)
    await sync_to_async(services.step_start)(run_id=run.id, index=0)  # seq 2
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["seq"] == 2
        # A long run outlives the retention period: every event it logged so far is pruned.
        await sync_to_async(RunEvent.objects.filter(run_id=run.id).update)(
            ts=timezone.now() - timedelta(days=2)
        )
        assert await sync_to_async(retention.prune_run_events)(days=1) == 2

        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output={"n": 0})
        assert await run_seq(run.id) == 3
        assert await sync_to_async(list)(
            RunEvent.objects.filter(run_id=run.id).values_list("seq", flat=True)
        ) == [3]
        frame = await receive(ws)  # a watcher drops a seq it has seen: seq 1 again would never come
        assert [frame] == await logged_frames(run.id)
        assert (frame["type"], frame["seq"]) == ("step_succeeded", 3)
    finally:
        await ws.disconnect()


# --- The poller reads each run from its furthest-behind watcher ----------------------


class _PollWatcher:
    """A poller watcher (realtime.delivery.poller.Watcher) that records what it is handed."""

    def __init__(self, run_id, last_seq: int, *, until: int) -> None:
        self.run_id = run_id
        self.last_seq = last_seq
        self.seqs: list[int] = []
        self.until = until
        self.reached = asyncio.Event()

    async def on_event(self, seq: int, text: str, *, final: bool) -> None:
        if seq <= self.last_seq:
            return
        self.seqs.append(seq)
        self.last_seq = seq
        if seq >= self.until:
            self.reached.set()


async def _stop_polling(poller: Poller, *watchers: _PollWatcher) -> None:
    """Unwatch every watcher and wait (bounded) for the poller's task to end."""
    task = poller._task
    for watcher in watchers:
        poller.unwatch(watcher)
    if task is not None:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)


def _four_events(user):
    run = _started_run(user, steps=2)  # seq 1
    _do_step(run.id, 0)  # seq 2, 3
    services.step_start(run_id=run.id, index=1)  # seq 4
    return run


@pytest.mark.usefixtures("dispatched")
async def test_a_poll_watcher_behind_another_of_its_run_gets_what_it_missed(user):
    """Kills: the poller reading a run from its watchers' highest seq instead of the lowest.

    Two watchers of one run, due on the same tick: one has seen seq 1, the
    other is at the head (seq 4) and no event follows, so nothing would ever
    show the one behind that it has a gap to fill.
    """
    run = await sync_to_async(_four_events)(user)
    poller = Poller(asyncio.get_running_loop())
    behind = _PollWatcher(run.id, 1, until=4)
    ahead = _PollWatcher(run.id, 4, until=4)
    try:
        poller.watch(behind, interval=0.05)
        poller.watch(ahead, interval=0.05)
        await asyncio.wait_for(behind.reached.wait(), WAIT)
        assert behind.seqs == [2, 3, 4]
        assert ahead.seqs == []
    finally:
        await _stop_polling(poller, behind, ahead)


class _BrokenPollWatcher(_PollWatcher):
    async def on_event(self, seq: int, text: str, *, final: bool) -> None:
        raise RuntimeError("this watcher's socket broke")


@pytest.mark.usefixtures("dispatched")
async def test_a_poll_watchers_failing_delivery_does_not_stop_the_poller(user, caplog):
    """Kills poller.py's ExceptionReplacer on ``_hand``'s ``except Exception``.

    One of two poll watchers of a run fails every delivery: the other gets every
    event, on this tick and on the next ones (the poller's task goes on).
    """
    run = await sync_to_async(_four_events)(user)
    poller = Poller(asyncio.get_running_loop())
    broken = _BrokenPollWatcher(run.id, 1, until=4)
    healthy = _PollWatcher(run.id, 1, until=4)
    try:
        poller.watch(broken, interval=0.05)
        poller.watch(healthy, interval=0.05)
        await asyncio.wait_for(healthy.reached.wait(), WAIT)
        healthy.reached.clear()
        healthy.until = 5
        await sync_to_async(services.step_succeed)(run_id=run.id, index=1, output=None)  # seq 5
        await asyncio.wait_for(healthy.reached.wait(), WAIT)
        assert healthy.seqs == [2, 3, 4, 5]
        # Logged with what broke, for the operator: the message and its traceback.
        assert f"poll delivery to a watcher of run {run.id} failed" in caplog.text
        assert "RuntimeError: this watcher's socket broke" in caplog.text
    finally:
        await _stop_polling(poller, broken, healthy)


class _DeletionWatcher(_PollWatcher):
    """Told its run is gone: records it and leaves the poller, as a stream's close does."""

    def __init__(self, poller: Poller, run_id, *, breaks: bool = False) -> None:
        super().__init__(run_id, 0, until=10**9)
        self.poller, self.breaks, self.deleted = poller, breaks, asyncio.Event()

    async def on_deleted(self) -> None:
        self.poller.unwatch(self)
        self.deleted.set()
        if self.breaks:
            raise RuntimeError("this watcher's socket broke")


@pytest.mark.usefixtures("dispatched")
async def test_a_deleted_runs_poll_watchers_are_ended_and_a_failing_one_stops_nothing(user):
    """Kills poller.py's ``if polled.gone`` negated and ``return_exceptions=True`` dropped.

    Two watchers of a run that is deleted, one of them failing as it is ended; a
    watcher of another run goes on getting that run's events on the next ticks.
    """
    gone, live = await sync_to_async(_four_events)(user), await sync_to_async(_four_events)(user)
    poller = Poller(asyncio.get_running_loop())
    broken = _DeletionWatcher(poller, gone.id, breaks=True)
    healthy = _DeletionWatcher(poller, gone.id)
    other = _PollWatcher(live.id, 4, until=5)
    try:
        for watcher in (broken, healthy, other):
            poller.watch(watcher, interval=0.05)
        await sync_to_async(services.run_delete)(run_id=gone.id)
        await asyncio.wait_for(asyncio.gather(broken.deleted.wait(), healthy.deleted.wait()), WAIT)
        await sync_to_async(services.step_succeed)(run_id=live.id, index=1, output=None)  # seq 5
        await asyncio.wait_for(other.reached.wait(), WAIT)
        assert other.seqs == [5]
    finally:
        await _stop_polling(poller, broken, healthy, other)


@pytest.mark.usefixtures("dispatched")
async def test_a_failed_poll_query_is_asked_again_on_the_next_tick(user, monkeypatch, caplog):
    """Kills poller.py's ExceptionReplacer on tick()'s ``except Exception`` around the log read.

    The first poll query raises (the database blipped): the poller's task must
    go on, and the next tick hands the watcher what it missed.
    """
    from realtime.reads import threads

    run = await sync_to_async(_four_events)(user)
    real_read, failures = threads.read, []

    async def read_failing_once(fn, *args, **kwargs):
        if fn is selectors.events_after_cursors and not failures:
            failures.append(fn)
            raise ConnectionError("the database blipped")
        return await real_read(fn, *args, **kwargs)

    monkeypatch.setattr(threads, "read", read_failing_once)
    poller = Poller(asyncio.get_running_loop())
    watcher = _PollWatcher(run.id, 1, until=4)
    try:
        poller.watch(watcher, interval=0.05)
        await asyncio.wait_for(watcher.reached.wait(), WAIT)
        assert failures and watcher.seqs == [2, 3, 4]
        assert "poll of 1 runs failed" in caplog.text
        assert "ConnectionError: the database blipped" in caplog.text  # with its traceback
        # The tick that found the events says how long its query took (not a clock reading).
        took = [float(ms) for ms in re.findall(r"time=([0-9.]+)ms", caplog.text)]
        assert took and all(ms < 60_000 for ms in took), took
    finally:
        await _stop_polling(poller, watcher)


# --- The log's writer: no hole in seq, no publish lost to another's failure ----------


@pytest.mark.usefixtures("dispatched")
def test_an_append_that_fails_outside_a_transaction_leaves_no_hole_in_seq(user):
    """Kills: append() skipping its own transaction when called outside one.

    The seq is allocated before the event is written: both must go together,
    or a failed write leaves the run's counter one past its log.
    """
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    with pytest.raises(TypeError):
        log.append(run_id=run.id, type="run_status", payload={"status": object()})
    assert Run.objects.get(pk=run.id).seq == 0
    services.run_start(run_id=run.id)
    assert list(RunEvent.objects.filter(run_id=run.id).values_list("seq", flat=True)) == [1]


@pytest.mark.usefixtures("dispatched")
def test_a_publish_that_raises_neither_fails_the_writer_nor_drops_the_next_publishes(user, monkeypatch):
    """Kills: the after-commit publish registered with robust=False.

    publish() is written never to raise; if it ever does, the writer has
    committed already, and the transaction's later events must still be sent.
    """
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}] * 2)
    published = []

    def publish_raising_first(event, **kwargs):
        published.append(event.seq)
        if event.seq == 1:
            raise RuntimeError("a publish that raised")
        return True

    monkeypatch.setattr(publisher, "publish", publish_raising_first)
    services.run_fail(run_id=run.id, error="stopped")  # one transaction: 2 step_skipped + run_completed
    assert published == [1, 2, 3]
    assert Run.objects.get(pk=run.id).status == "failed"


# --- The hub's channel outlives a leave while another run's join is under way -----------


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_a_join_under_way_keeps_the_channel_when_the_last_other_watcher_leaves(
    user, token, monkeypatch
):
    """Kills: the hub closing its channel when no watcher is left although a join is under way.

    Watcher A (run 1) leaves, the process's last watcher, while watcher B's join
    of run 2 is held inside group_add (a named point): B's membership is on the
    hub's channel, so the channel must stay, and B must get run 2's events.
    """
    first = await sync_to_async(_started_run)(user, steps=1)
    second = await sync_to_async(_started_run)(user, steps=1)
    layer = get_channel_layer()
    hub = get_hub(layer)
    adding, let_add = asyncio.Event(), asyncio.Event()
    real_group_add = layer.group_add

    async def held_group_add(group, channel):
        if group == group_name(second.id):
            adding.set()
            await asyncio.wait_for(let_add.wait(), WAIT)
        return await real_group_add(group, channel)

    monkeypatch.setattr(layer, "group_add", held_group_add)
    a, _ = await open_socket(first.id, headers=token_headers(token))
    arriving = asyncio.create_task(open_socket(second.id, headers=token_headers(token)))
    b = None
    try:
        await asyncio.wait_for(adding.wait(), WAIT)
        await a.disconnect(timeout=WAIT)  # the last watcher of the process leaves its group
        let_add.set()
        b, connected = await arriving
        assert connected["seq"] == 1
        assert hub.channel is not None
        await sync_to_async(_do_step)(second.id, 0)
        await sync_to_async(services.run_succeed)(run_id=second.id, output=[{"n": 0}])
        frames, code = await receive_until_close(b)
        assert frames == await logged_frames(second.id, after=1) and code == 1000
    finally:
        let_add.set()
        if b is None and not arriving.done():
            arriving.cancel()


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_the_last_watcher_out_closes_the_hubs_channel(user, token):
    """Kills: the hub not cancelling its parked receive when no run is watched any more.

    Left running, it keeps the process subscribed (pub/sub) to a channel nobody reads.
    """
    run = await sync_to_async(_started_run)(user, steps=1)
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    hub = get_hub(get_channel_layer())
    assert hub.channel is not None
    await ws.disconnect(timeout=WAIT)
    assert hub.watchers == {} and hub.channel is None


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_a_failing_group_discard_neither_fails_the_leave_nor_blocks_the_next_join(
    user, token, monkeypatch
):
    """Kills: the hub's leave letting a layer error out (Redis gone as the last watcher leaves)."""
    run = await sync_to_async(_started_run)(user, steps=1)
    layer = get_channel_layer()
    real_group_discard = layer.group_discard

    async def failing_group_discard(group, channel):
        raise ConnectionError("the layer went away")

    ws, _ = await open_socket(run.id, headers=token_headers(token))
    monkeypatch.setattr(layer, "group_discard", failing_group_discard)
    await ws.disconnect(timeout=WAIT)  # raises what the consumer raised
    assert ws.future.done() and ws.future.exception() is None
    monkeypatch.setattr(layer, "group_discard", real_group_discard)

    again, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["seq"] == 1
    await sync_to_async(_do_step)(run.id, 0)
    await sync_to_async(services.run_succeed)(run_id=run.id, output=[{"n": 0}])
    frames, code = await receive_until_close(again)
    assert frames == await logged_frames(run.id, after=1) and code == 1000


@pytest.mark.redis
@pytest.mark.usefixtures("push", "dispatched")
async def test_one_watchers_failing_delivery_does_not_stop_the_others_events(user, token, monkeypatch):
    """Kills: the hub's receive loop letting one watcher's delivery error end it for every watcher."""
    run = await sync_to_async(_started_run)(user, steps=1)
    hub = get_hub(get_channel_layer())
    await open_socket(run.id, headers=token_headers(token))  # closed by the autouse fixture
    (failing,) = hub.watchers[group_name(run.id)]

    async def deliver_raising(seq, text, *, final):
        raise RuntimeError("this watcher's socket broke")

    monkeypatch.setattr(failing, "on_event", deliver_raising)
    healthy, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        await sync_to_async(_do_step)(run.id, 0)
        await sync_to_async(services.run_succeed)(run_id=run.id, output=[{"n": 0}])
        frames, code = await receive_until_close(healthy)
        assert frames == await logged_frames(run.id, after=connected["seq"]) and code == 1000
    finally:
        await close_socket(healthy)


@pytest.mark.usefixtures("push", "dispatched")
@pytest.mark.parametrize("how", ["disconnect", "cancel"])
async def test_a_delivery_under_way_when_the_client_leaves_sends_nothing_after(user, token, monkeypatch, how):
    """Kills stream.py's ``close`` not moving to closed when ``disconnect`` ends the stream,
    and in ``__call__``'s ``finally`` (Daphne cancelling an application that outlives its socket).

    An event arrives with a gap before it, so its delivery runs on a task of its
    own and reads the gap from the log; the client disconnects while that read
    is held, and the delivery goes on while the disconnect's leave of the group
    is held in ``group_discard`` (before the consumer has ended). The delivery
    must send nothing to the socket being closed.
    """
    from realtime.reads import threads

    run = await sync_to_async(_started_run)(user, steps=1)  # seq 1
    layer = get_channel_layer()
    hub = get_hub(layer)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    reading, let_read, discarding, let_discard = (asyncio.Event() for _ in range(4))
    real_read, real_discard = threads.read, layer.group_discard

    async def held_read(fn, *args, **kwargs):
        if fn is selectors.events_between:
            reading.set()  # named point: the delivery fills its gap from the log
            await asyncio.wait_for(let_read.wait(), WAIT)
        return await real_read(fn, *args, **kwargs)

    async def held_discard(*args):
        discarding.set()  # named point: the disconnecting consumer leaves its run's group
        await asyncio.wait_for(let_discard.wait(), WAIT)
        return await real_discard(*args)

    monkeypatch.setattr(threads, "read", held_read)
    monkeypatch.setattr(layer, "group_discard", held_discard)
    leaving = None
    try:
        seq = connected["seq"] + 2  # one event missing before it: a gap to fill
        message = {
            "type": publisher.GROUP_MESSAGE_TYPE,
            "group": group_name(run.id),
            "seq": seq,
            "final": False,
        }
        await layer.group_send(group_name(run.id), {**message, "text": f'{{"seq": {seq}}}'})
        await asyncio.wait_for(reading.wait(), WAIT)
        (delivery,) = hub._deliveries
        if how == "disconnect":
            leaving = asyncio.create_task(ws.disconnect(timeout=WAIT))
        else:
            ws.future.cancel()
            leaving = asyncio.gather(ws.future, return_exceptions=True)
        await asyncio.wait_for(discarding.wait(), WAIT)
        let_read.set()
        await asyncio.wait_for(delivery, WAIT)
        let_discard.set()
        await leaving
        assert ws.output_queue.empty()  # nothing was sent after the client left
    finally:
        let_read.set()
        let_discard.set()
        if leaving is not None:
            await asyncio.gather(leaving, return_exceptions=True)
        if not ws.future.done():  # a cancelled application has nothing left to close
            await close_socket(ws)


@pytest.mark.usefixtures("push", "dispatched")
async def test_catch_up_sends_what_the_log_holds_beyond_the_watchers_last_seq(user, token):
    """Kills realtime/sockets/run.py's caught_up sending none of the events it read.

    catch_up is a transport change's way back (failover, recovery): the watcher
    is taken out of its run's group here, so the events committed meanwhile reach
    it only through catch_up, which must send each of them, whole and in order.
    """
    run = await sync_to_async(_started_run)(user, steps=2)
    hub = get_hub(get_channel_layer())
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        (watcher,) = hub.watchers[group_name(run.id)]
        await hub.leave(watcher, group_name(run.id))  # nothing pushed to it from here on
        await sync_to_async(_do_step)(run.id, 0)
        await watcher.caught_up()
        missed = await logged_frames(run.id, after=connected["seq"])
        assert len(missed) == 2
        assert [await receive(ws) for _ in missed] == missed
    finally:
        await close_socket(ws)


@pytest.mark.usefixtures("push", "dispatched")
async def test_a_watcher_busy_connecting_does_not_hold_up_another_runs_events(user, token, monkeypatch):
    """Kills run.py's delivers_without_waiting mutants (``and`` → ``or``, ``not locked()`` → ``locked()``).

    A watcher holds its delivery lock while it reads its snapshot; an event of
    its run arriving then must go on a task of its own, not wait for that lock on
    the hub's task, which every other watcher of the process needs: another
    run's event arrives while the first watcher's snapshot read is still held.
    """
    busy_run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    other_run = await sync_to_async(_started_run)(user, steps=1)  # seq 1
    other, _ = await open_socket(other_run.id, headers=token_headers(token))
    snapshot_read, resume = threading.Event(), threading.Event()
    original = selectors.connect_state

    def held_connect_state(**kwargs):
        state = original(**kwargs)
        if kwargs["run_id"] == busy_run.id:
            snapshot_read.set()  # named point: the busy watcher holds its lock, reading its snapshot
            assert resume.wait(WAIT), "the test never let the connect go on"
        return state

    monkeypatch.setattr(selectors, "connect_state", held_connect_state)
    connecting = asyncio.create_task(open_socket(busy_run.id, headers=token_headers(token)))
    try:
        await _wait_in_thread(snapshot_read, "the busy watcher's snapshot read")
        await sync_to_async(services.run_start)(run_id=busy_run.id)  # seq 1 of the busy watcher's run
        await sync_to_async(services.step_start)(run_id=other_run.id, index=0)  # seq 2 of the other run
        assert [await receive(other)] == await logged_frames(other_run.id, after=1)
        resume.set()
        busy, connected = await connecting
        assert connected["seq"] in (0, 1)  # the event of its run is in its snapshot, or follows
        if connected["seq"] == 0:
            assert [await receive(busy)] == await logged_frames(busy_run.id, after=0)
    finally:
        resume.set()
        await close_socket(other)
        results = await asyncio.gather(connecting, return_exceptions=True)
        if not isinstance(results[0], BaseException):
            await close_socket(results[0][0])


@pytest.mark.usefixtures("push", "dispatched")
async def test_an_event_arriving_after_a_gap_is_preceded_by_the_missed_ones(user, token, monkeypatch):
    """Kills run.py's ``if seq > last_seq + 1`` → ``if not ...`` (a gap not filled from the log).

    Two events commit without being published (their publishes are dropped);
    then only the second is published: the watcher must get both, in order.
    Then the next event, published as usual, arrives exactly once and is the
    last frame before the close: kills a delivery that puts the last sent seq
    back to its value before the gap (the gap would be sent again, issue 25 #3).
    """
    run = await sync_to_async(_started_run)(user, steps=1)  # seq 1
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        with monkeypatch.context() as dropped:
            dropped.setattr(publisher, "group_send", lambda group, message: None)
            await sync_to_async(_do_step)(run.id, 0)  # seq 2, 3: in the log, never published
        last = await sync_to_async(RunEvent.objects.get)(run_id=run.id, seq=3)
        assert await sync_to_async(publisher.publish)(last)
        frames = [await receive(ws) for _ in range(2)]
        assert frames == await logged_frames(run.id, after=connected["seq"])
        await sync_to_async(services.run_succeed)(run_id=run.id, output={})  # seq 4, final: published
        after_the_gap, code = await receive_until_close(ws)
        assert after_the_gap == await logged_frames(run.id, after=3)
        assert ([frame["seq"] for frame in after_the_gap], code) == ([4], CLOSE_NORMAL)
    finally:
        await close_socket(ws)


@pytest.mark.usefixtures("push", "dispatched")
async def test_a_final_event_arriving_after_a_gap_ends_the_stream(user, token, monkeypatch):
    """Kills run.py's gap read ``upto=seq - 1`` → ``upto=seq`` (the event itself read as missed).

    The gap is read from the log up to the event before the one that arrived;
    reading the arrived event too sends it as a missed one (not final), and the
    copy that did arrive is then dropped by its seq: the run's last frame would
    reach the client but the socket would stay open. Two events commit
    unpublished, then the run completes with its publish: the client gets every
    frame once, in order, and then the normal close.
    """
    run = await sync_to_async(_started_run)(user, steps=1)  # seq 1
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        with monkeypatch.context() as dropped:
            dropped.setattr(publisher, "group_send", lambda group, message: None)
            await sync_to_async(_do_step)(run.id, 0)  # seq 2, 3: in the log, never published
        await sync_to_async(services.run_succeed)(run_id=run.id, output={})  # seq 4, final: published
        frames, code = await receive_until_close(ws)
        assert frames == await logged_frames(run.id, after=connected["seq"])
        assert [frame["seq"] for frame in frames] == [2, 3, 4]
        assert code == CLOSE_NORMAL
    finally:
        await close_socket(ws)


@pytest.mark.usefixtures("push", "dispatched")
async def test_a_watcher_whose_layer_receive_keeps_failing_gets_its_events_from_the_log(
    user, token, settings, monkeypatch
):
    """Kills stream.py's ``on_layer_down`` ``if self.closed: return`` inverted (no failover).

    The process's receive on its layer channel starts failing while the layer
    probe still finds the layer healthy (only that channel is broken): each
    failure hands the watcher to the poller (and the probe brings it back, with
    a catch-up), so an event committed meanwhile still reaches it, once, in order.
    """
    settings.REALTIME_POLL_INTERVAL = 0.05
    run = await sync_to_async(_started_run)(user, steps=1)  # seq 1
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        hub = get_hub(get_channel_layer())
        real_receive = hub.layer.receive

        async def broken_receive(channel):
            if channel == hub.channel:
                raise ConnectionError("this process's layer channel is broken (test)")
            return await real_receive(channel)

        monkeypatch.setattr(hub.layer, "receive", broken_receive)
        # The hub's task is parked in a receive begun before the break: it brings seq 2.
        await sync_to_async(services.step_start)(run_id=run.id, index=0)
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output={})  # seq 3
        frames = [await receive(ws) for _ in range(2)]
        assert frames == await logged_frames(run.id, after=connected["seq"])
    finally:
        await close_socket(ws)


@pytest.mark.usefixtures("push")
async def test_a_push_watcher_refused_before_it_joined_ends_without_an_error(token):
    """Kills run.py's ``subscribed = False`` → ``True`` at start.

    A watcher refused before it joins its run's group (here: a run id that is
    not a UUID) has no group to leave: leaving one anyway raised as the client
    went, a traceback under Daphne for a plain 4400.
    """
    ws, frame = await open_socket("not-a-uuid", headers=token_headers(token))
    try:
        assert (frame["type"], frame["payload"]["code"]) == ("error", "4400")
        assert (await ws.receive_output(timeout=WAIT))["code"] == 4400
        await ws.disconnect(timeout=WAIT)  # raises what the consumer raised on the way out
    finally:
        await close_socket(ws)


@pytest.mark.usefixtures("push", "dispatched")
async def test_nothing_is_sent_after_the_close_that_ends_a_finished_run(user, token):
    """Kills run.py's final event not closing the stream (``close(CLOSE_NORMAL)`` in ``_send_event``).

    The run's final event closes the socket (1000); a ping the client sent
    before it saw that close is not answered: nothing follows the close frame.
    """
    run = await sync_to_async(_started_run)(user, steps=1)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        await sync_to_async(_do_step)(run.id, 0)
        await sync_to_async(services.run_succeed)(run_id=run.id, output={})
        frames, code = await receive_until_close(ws)
        assert frames == await logged_frames(run.id, after=connected["seq"]) and code == CLOSE_NORMAL
        await ws.send_to(text_data='{"type": "ping"}')
        await ws.disconnect(timeout=WAIT)  # returns once the consumer has ended
        assert ws.output_queue.empty()
    finally:
        await close_socket(ws)
