"""realtime.delivery.hub's joins, leaves and failures racing each other, forced at named points.

The hub is driven directly on each real channel layer, with stand-in watchers
(the hub only needs ``Member``'s four methods), so each interleaving is set up
exactly: a layer call is held at a named point until the test lets it go on.
Every test here kills a mutant of ``make mutate`` that the socket-level tests
in test_hub.py and test_guarantees.py let through (docs/testing.md).
"""

import asyncio

import pytest
from channels.layers import get_channel_layer

from realtime.delivery.hub import RunHub
from realtime.events import shards
from realtime.events.publisher import GROUP_MESSAGE_TYPE
from tests.realtime.support import WAIT

pytestmark = pytest.mark.usefixtures("layer")

GROUP = "run.hub-race"


class Watcher:
    """A stand-in for a RunStream: records what the hub hands it."""

    def __init__(self) -> None:
        self.closed = False
        self.delivered: asyncio.Queue[int] = asyncio.Queue()
        self.failed: asyncio.Queue[Exception] = asyncio.Queue()

    def delivers_without_waiting(self, seq: int) -> bool:
        return True

    async def on_event(self, seq: int, text: str, *, final: bool) -> None:
        self.delivered.put_nowait(seq)

    def on_layer_down(self, error: Exception | None = None) -> None:
        self.failed.put_nowait(error)


class Gate:
    """A named point in a layer call: ``reached`` is set there, the call waits for ``go``."""

    def __init__(self) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await asyncio.wait_for(self.go.wait(), WAIT)


class NotedDict(dict):
    """The hub's ``_joining`` / ``_leaving``: a read or a write of a key is a named point.

    The hub reads a group's future only to wait on it (``await shield(d[group])``,
    no suspension in between), and registers a join just before it opens the
    channel: when the test sees the point, the hub's coroutine is waiting there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.read: dict[str, asyncio.Event] = {}
        self.written: dict[str, asyncio.Event] = {}

    def _point(self, points: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return points.setdefault(key, asyncio.Event())

    def __getitem__(self, key):
        self._point(self.read, key).set()
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        self._point(self.written, key).set()
        super().__setitem__(key, value)

    async def until_read(self, key: str, *or_done: asyncio.Task) -> None:
        """Until the hub waits on ``key``'s future (or one of ``or_done`` ended without)."""
        point = asyncio.create_task(self._point(self.read, key).wait())
        try:
            await asyncio.wait([point, *or_done], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            point.cancel()

    async def until_written(self, key: str) -> None:
        await asyncio.wait_for(self._point(self.written, key).wait(), WAIT)


@pytest.fixture
async def hub():
    """A hub of its own on this test's layer; every watcher left and its task ended afterwards."""
    run_hub = RunHub(asyncio.get_running_loop(), get_channel_layer())
    run_hub._joining, run_hub._leaving = NotedDict(), NotedDict()
    yield run_hub
    for group, members in list(run_hub.watchers.items()):
        for member in list(members):
            await run_hub.leave(member, group)
    if run_hub._task is not None:
        run_hub._task.cancel()
        await asyncio.gather(run_hub._task, return_exceptions=True)


async def _send(seq: int, group: str = GROUP) -> None:
    message = {"type": GROUP_MESSAGE_TYPE, "group": group, "seq": seq, "final": False, "text": "{}"}
    await get_channel_layer().group_send(group, message)


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_join_that_waited_for_another_checks_again_for_a_leave_started_meanwhile(hub, monkeypatch):
    """Kills hub.py's ``continue`` → ``break`` after waiting for another join of the same group.

    Join A is held in ``group_add``; join B of the same group waits for it. A's
    watcher leaves as soon as A is done, before B wakes up: B must wait for that
    leave and join the group again, not register on a group being left.
    """
    layer = hub.layer
    adding, discarding = Gate(), Gate()
    real_add, real_discard = layer.group_add, layer.group_discard
    adds: list[str] = []

    async def held_add(group, channel):
        adds.append(group)
        if len(adds) == 1:
            await adding.hold()
        return await real_add(group, channel)

    async def held_discard(group, channel):
        await discarding.hold()
        return await real_discard(group, channel)

    monkeypatch.setattr(layer, "group_add", held_add)
    monkeypatch.setattr(layer, "group_discard", held_discard)
    first, second = Watcher(), Watcher()

    async def join_then_leave() -> None:
        # No suspension between the end of the join and the leave's group_discard:
        # the leave starts before the waiting join B is woken.
        await hub.join(first, GROUP)
        await hub.leave(first, GROUP)

    a = asyncio.create_task(join_then_leave())
    await asyncio.wait_for(adding.reached.wait(), WAIT)  # A is in group_add
    b = asyncio.create_task(hub.join(second, GROUP))
    try:
        await hub._joining.until_read(GROUP, b)  # B waits for A's join
        assert not b.done()
        adding.go.set()
        await asyncio.wait_for(discarding.reached.wait(), WAIT)  # A's leave is under way
        await hub._leaving.until_read(GROUP, b)  # B, woken, waits for that leave (or went on without)
        discarding.go.set()
        await asyncio.wait_for(asyncio.gather(a, b), WAIT)
    finally:
        adding.go.set()
        discarding.go.set()
        await _cancel(a, b)
    assert adds == [GROUP, GROUP]  # B joined again after the leave
    await _send(1)
    assert await asyncio.wait_for(second.delivered.get(), WAIT) == 1


@pytest.mark.parametrize("leaving", ["degraded", "refreshed"])
async def test_a_leave_of_a_group_that_is_being_joined_leaves_nothing(hub, monkeypatch, leaving):
    """Kills hub.py's two ``and`` → ``or`` mutants of leave()'s "joined, not joining, not leaving" check.

    The last watcher of a group leaves while another watcher's join of that
    group is held in ``group_add``: a watcher whose own join failed (the group
    is not joined yet), or the group's one watcher while a refresh re-adds it
    (the group is joined). The leave must not discard the group that join is
    adding: a discard landing after the add would leave the joining watcher
    registered on a group its process is no longer in.
    """
    layer = hub.layer
    adding = Gate()
    added, discarded = asyncio.Event(), asyncio.Event()
    real_add, real_discard = layer.group_add, layer.group_discard
    discards: list[str] = []
    first = Watcher()
    if leaving == "refreshed":
        await hub.join(first, GROUP)

    async def held_add(group, channel):
        await adding.hold()
        await real_add(group, channel)
        added.set()

    async def late_discard(group, channel):
        discards.append(group)
        discarded.set()
        await asyncio.wait_for(added.wait(), WAIT)  # a discard racing the add lands after it
        return await real_discard(group, channel)

    monkeypatch.setattr(layer, "group_add", held_add)
    monkeypatch.setattr(layer, "group_discard", late_discard)
    joining = Watcher()
    join = asyncio.create_task(hub.join(joining, GROUP, refresh=leaving == "refreshed"))
    leave = None
    try:
        await asyncio.wait_for(adding.reached.wait(), WAIT)
        leave = asyncio.create_task(hub.leave(first, GROUP))  # "degraded": never registered
        discarding = asyncio.create_task(asyncio.wait_for(discarded.wait(), WAIT))
        # The leave ends at once, or (the mutants) waits in group_discard for the add.
        await asyncio.wait([leave, discarding], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        discarding.cancel()
        adding.go.set()
        await asyncio.wait_for(asyncio.gather(join, leave), WAIT)
    finally:
        adding.go.set()
        added.set()
        await _cancel(join, *([leave] if leave else []))
    assert discards == []
    await _send(1)
    assert await asyncio.wait_for(joining.delivered.get(), WAIT) == 1


class LayerDown(Exception):
    pass


async def _two_joins_on_one_failing_call(hub, monkeypatch, call: str, second_group: str) -> list:
    """A first join's layer ``call`` fails while held; a second join waits on it. Both outcomes."""
    held = Gate()

    async def failing(*args, **kwargs):
        await held.hold()
        raise LayerDown(call)

    monkeypatch.setattr(hub.layer, call, failing)
    first = asyncio.create_task(hub.join(Watcher(), GROUP))
    second = None
    try:
        await asyncio.wait_for(held.reached.wait(), WAIT)
        second = asyncio.create_task(hub.join(Watcher(), second_group))
        if second_group == GROUP:
            await hub._joining.until_read(GROUP, second)  # it waits for the first's join
        else:
            # Registered as joining, it runs on (without suspending) to where it waits for the opening.
            await hub._joining.until_written(second_group)
        assert not second.done()
        held.go.set()
        return await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), WAIT)
    finally:
        held.go.set()
        await _cancel(first, *([second] if second else []))


async def test_a_failed_channel_opening_fails_the_joins_waiting_on_it(hub, monkeypatch):
    """Kills hub.py's ExceptionReplacer on ``_open_channel``'s ``except BaseException``.

    The first join's ``new_channel`` fails while a second join (another run)
    waits for that opening: both joins raise, neither waits forever.
    """
    # The hub opens its channel through shards (on the pub/sub layer, no layer call at all):
    # route that through the layer's new_channel, the call this test makes fail.
    monkeypatch.setattr(shards, "new_receiving_channel", lambda layer: layer.new_channel())
    results = await _two_joins_on_one_failing_call(hub, monkeypatch, "new_channel", GROUP + "-other")
    assert [type(result) for result in results] == [LayerDown, LayerDown]
    assert hub.watchers == {} and hub.channel is None


async def test_a_failed_group_add_fails_the_joins_of_that_group_waiting_on_it(hub, monkeypatch):
    """Kills hub.py's ExceptionReplacer on ``_add``'s ``except BaseException``.

    The first join's ``group_add`` fails while a second join of the same group
    waits for it: both raise, neither waits forever, and a later join works.
    """
    real_add = hub.layer.group_add
    results = await _two_joins_on_one_failing_call(hub, monkeypatch, "group_add", GROUP)
    assert [type(result) for result in results] == [LayerDown, LayerDown]
    assert hub.watchers == {}
    monkeypatch.setattr(hub.layer, "group_add", real_add)
    watcher = Watcher()
    await asyncio.wait_for(hub.join(watcher, GROUP), WAIT)
    await _send(1)
    assert await asyncio.wait_for(watcher.delivered.get(), WAIT) == 1


async def test_a_failed_receive_fails_every_watcher_over_at_once(hub, monkeypatch, settings):
    """Kills hub.py's mutants of the receive loop's failure branch (its ``except``, its loops).

    No probe here (the watchers are stand-ins): only the hub's own reaction to
    a failing ``receive`` can fail them over, and it must reach every watcher
    of every run before the loop waits to receive again.
    """
    settings.REALTIME_POLL_INTERVAL = WAIT * 10  # the retry wait: the test is over long before it
    receiving = Gate()
    receives = 0

    async def failing_receive(channel):
        nonlocal receives
        receives += 1
        if receives == 1:
            await receiving.hold()
            raise LayerDown("receive")
        await asyncio.Event().wait()  # parked; cancelled at the end

    monkeypatch.setattr(hub.layer, "receive", failing_receive)
    watchers = [Watcher(), Watcher(), Watcher()]
    await hub.join(watchers[0], GROUP)
    await hub.join(watchers[1], GROUP)
    await hub.join(watchers[2], GROUP + "-other")
    await asyncio.wait_for(receiving.reached.wait(), WAIT)
    receiving.go.set()
    for watcher in watchers:
        error = await asyncio.wait_for(watcher.failed.get(), WAIT)
        assert isinstance(error, LayerDown)
    assert not hub._task.done()  # the loop goes on (waiting to receive again), it did not die


class LeavingWatcher(Watcher):
    """A stand-in that ends on its final event, leaving the hub from inside the delivery.

    As a RunStream does (``close`` on its final event): the hub's own task delivers the final
    event inline, so the last watcher's leave runs on that task, not parked.
    """

    def __init__(self, hub: RunHub, group: str) -> None:
        super().__init__()
        self.hub, self.group = hub, group

    async def on_event(self, seq: int, text: str, *, final: bool) -> None:
        await super().on_event(seq, text, final=final)
        if final:
            self.closed = True
            await self.hub.leave(self, self.group)


async def test_runs_watched_one_after_another_share_the_hubs_one_channel(hub, monkeypatch):
    """Kills hub.py's ``_stop_receiving`` check ``task is not None and ...`` → ``or``.

    Each run's only watcher ends on its final event, leaving from inside the
    hub's delivery: the hub's task is busy then, not parked in ``receive``, so
    the channel must stay for the next join. Dropped instead, the next join
    opens another one, and the old one is never cleaned up (the pub/sub layer
    frees a channel's queue only when a ``receive`` on it is cancelled): one
    leaked channel per run the process watched.
    """
    opened: list[str] = []
    real_open = shards.new_receiving_channel

    async def counted_open(layer):
        opened.append(await real_open(layer))
        return opened[-1]

    monkeypatch.setattr(shards, "new_receiving_channel", counted_open)
    for number in range(3):
        group = f"{GROUP}-{number}"
        watcher = LeavingWatcher(hub, group)
        await asyncio.wait_for(hub.join(watcher, group), WAIT)
        receiving = hub._task
        message = {"type": GROUP_MESSAGE_TYPE, "group": group, "seq": 1, "final": True, "text": "{}"}
        await hub.layer.group_send(group, message)
        assert await asyncio.wait_for(watcher.delivered.get(), WAIT) == 1
        await asyncio.wait([receiving], timeout=WAIT)  # its watcher left: the hub's task ends
        assert receiving.done() and hub.watchers == {}
    assert len(opened) == 1
    assert hub.channel == opened[0]


async def test_a_failed_refresh_does_not_stop_the_events_of_the_runs_other_watchers(hub, monkeypatch):
    """Kills hub.py's "nothing left" check in ``leave``: ``watchers or _joined`` → ``and``.

    Back from an outage, one watcher of a run rejoins its group (a refresh) and
    another one's refresh fails: the hub no longer counts the group as joined,
    though both watchers are still its own and the first is back on push. The
    last watcher of another run leaving then must not stop the hub's receiving:
    the first watcher would get no event of its run again.
    """
    back, still_down = Watcher(), Watcher()
    await asyncio.wait_for(hub.join(back, GROUP), WAIT)
    await asyncio.wait_for(hub.join(still_down, GROUP), WAIT)
    real_add = hub.layer.group_add

    async def failing_add(group, channel):
        raise LayerDown("group_add")

    monkeypatch.setattr(hub.layer, "group_add", failing_add)
    with pytest.raises(LayerDown):
        await asyncio.wait_for(hub.join(still_down, GROUP, refresh=True), WAIT)
    monkeypatch.setattr(hub.layer, "group_add", real_add)
    other = Watcher()
    await asyncio.wait_for(hub.join(other, GROUP + "-other"), WAIT)
    await asyncio.wait_for(hub.leave(other, GROUP + "-other"), WAIT)
    await _send(1)
    assert await asyncio.wait_for(back.delivered.get(), WAIT) == 1
