"""The poller's ticks sit on a grid: staggered watchers share one query per interval."""

import uuid

from realtime.poller import Poller, _next_slot


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


def test_next_slot_is_strictly_after_now():
    assert _next_slot(102.0, 2.0) == 104.0
    assert _next_slot(102.0005, 2.0) == 104.0
    assert _next_slot(103.9999, 2.0) == 104.0
