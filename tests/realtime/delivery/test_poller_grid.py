"""The poller's ticks sit on a grid: staggered watchers share one query per interval."""

import asyncio
import uuid

from realtime.delivery.poller import Poller, next_slot


class FakeLoop:
    """Just what Poller.watch needs of a loop: the time, and a task it never runs."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def create_task(self, coro, name=None):
        coro.close()
        return object()


class Watcher:
    def __init__(self, run_id):
        self.run_id = run_id
        self.last_seq = 0


def test_watchers_that_connect_at_different_times_are_due_at_the_same_tick():
    loop = FakeLoop(100.3)
    poller = Poller(loop)
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    watchers = []
    for now, run_id in ((100.3, run_a), (101.1, run_b), (101.9, run_a)):
        loop.now = now
        watcher = Watcher(run_id)
        poller.watch(watcher, interval=2.0)
        watchers.append(watcher)
    dues = {poller.runs[w.run_id][w].due for w in watchers}
    assert dues == {102.0}


def test_a_slower_interval_lands_on_the_faster_grid_when_it_is_a_multiple():
    loop = FakeLoop(100.3)
    poller = Poller(loop)
    fast, slow = Watcher(uuid.uuid4()), Watcher(uuid.uuid4())
    poller.watch(fast, interval=2.0)
    poller.watch(slow, interval=10.0)
    assert poller.runs[fast.run_id][fast].due == 102.0
    assert poller.runs[slow.run_id][slow].due == 110.0


def testnext_slot_is_strictly_after_now():
    assert next_slot(102.0, 2.0) == 104.0
    assert next_slot(102.0005, 2.0) == 104.0
    assert next_slot(103.9999, 2.0) == 104.0


class ClockLoop:
    """The running loop with a clock the test moves: the poller's tasks run for real."""

    def __init__(self, loop, now: float):
        self._loop, self.now = loop, now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(self._loop, name)


async def test_a_watcher_overdue_by_less_than_a_second_is_polled_at_once():
    """Kills poller.py's ``delay > 0`` → ``delay > -1``: an overdue watcher must not wait (or spin).

    The clock is moved, not waited for: half an interval past the watcher's due
    time, the poller must tick now; the mutant keeps waiting for a delay it
    already missed until the clock is a whole second past due.
    """
    loop = ClockLoop(asyncio.get_running_loop(), 100.0)
    poller = Poller(loop)
    ticked = asyncio.Event()

    async def tick() -> None:
        ticked.set()
        for watched in list(poller.runs.values()):
            for watcher in list(watched):
                poller.unwatch(watcher)  # one tick is enough: the poller ends

    poller.tick = tick
    first, second = Watcher(uuid.uuid4()), Watcher(uuid.uuid4())
    poller.watch(first, interval=1.0)  # due at 101.0; the poller waits on its wake event
    task = poller._task
    try:
        loop.now = 101.5
        poller.watch(second, interval=1.0)  # wakes the poller; first is now half a second overdue
        await asyncio.wait_for(ticked.wait(), 5)
    finally:
        for watched in list(poller.runs.values()):
            for watcher in list(watched):
                poller.unwatch(watcher)
        await asyncio.wait_for(task, 5)


class NotedWake(asyncio.Event):
    """The poller's wake event: its ``wait`` is a named point (the poller waits for a due time)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self):
        self.waiting.set()
        return await super().wait()


async def test_a_watcher_is_not_polled_before_its_due_time():
    """Kills poller.py's ``delay > 0`` → ``delay > 1``: a poll a second early.

    With the clock a whole interval (one second) before the watcher's due time,
    the poller must wait (the named point: it waits on its wake event), and tick
    only once the clock is moved to the due time.
    """
    loop = ClockLoop(asyncio.get_running_loop(), 100.0)
    poller = Poller(loop)
    poller._wake = NotedWake()
    ticks: list[float] = []
    ticked = asyncio.Event()

    async def tick() -> None:
        ticks.append(loop.now)
        ticked.set()
        for watched in list(poller.runs.values()):
            for watcher in list(watched):
                poller.unwatch(watcher)

    poller.tick = tick
    poller.watch(Watcher(uuid.uuid4()), interval=1.0)  # due at 101.0
    task = poller._task
    try:
        waiting = asyncio.ensure_future(poller._wake.waiting.wait())
        await asyncio.wait([waiting, task], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert ticks == []  # waiting for the due time, not polled early
        loop.now = 101.0
        poller.watch(Watcher(uuid.uuid4()), interval=1.0)  # wakes the poller at the due time
        await asyncio.wait_for(ticked.wait(), 5)
        assert ticks == [101.0]
    finally:
        for watched in list(poller.runs.values()):
            for watcher in list(watched):
                poller.unwatch(watcher)
        await asyncio.wait_for(task, 5)


def test_interval_of_is_a_watchers_current_interval():
    """Kills poller.py's ``interval_of`` answering None for a watched consumer (test_failover reads it)."""
    poller = Poller(FakeLoop(100.0))
    watcher = Watcher(uuid.uuid4())
    assert poller.interval_of(watcher) is None
    poller.watch(watcher, interval=2.0)
    assert poller.interval_of(watcher) == 2.0
    poller.watch(watcher, interval=0.5)
    assert poller.interval_of(watcher) == 0.5
    poller.unwatch(watcher)
    assert poller.interval_of(watcher) is None


def test_unwatching_a_runs_last_watcher_forgets_the_run_and_wakes_the_task():
    """Red with unwatch acting only on a watcher it did not hold (poller.py's
    ``watchers.pop(...) is not None`` → ``is None``): the run stayed in the poller,
    polled for nobody, and the task slept on to a tick for no one."""
    poller = Poller(FakeLoop(100.0))
    run_id = uuid.uuid4()
    first, second = Watcher(run_id), Watcher(run_id)
    poller.watch(first, interval=2.0)
    poller.watch(second, interval=2.0)
    poller._wake.clear()
    poller.unwatch(first)
    assert set(poller.runs[run_id]) == {second} and poller._wake.is_set()
    poller._wake.clear()
    poller.unwatch(second)
    assert run_id not in poller.runs and poller._wake.is_set()
    poller._wake.clear()
    poller.unwatch(second)  # a watcher it no longer holds: nothing to forget, no one to wake
    assert not poller._wake.is_set()
