"""The run-list poller: one read per tick for every /ws/runs/ socket of a process.

In-process sockets (WebsocketCommunicator) on the real PostgreSQL, and Redis
for the layers. The same stream through a real Daphne, poll mode and the
layer down included: tests/realtime/runlist/test_user_stream.py.
"""

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import OperationalError
from django.utils import timezone
from rest_framework.authtoken.models import Token

from realtime.delivery import failover
from realtime.events import log
from realtime.reads import summaries
from realtime.runlist import list_feed, list_poller
from realtime.runlist.list_poller import get_list_poller
from realtime.runlist.user_stream import ListStream
from runs import services
from tests.realtime.support import WAIT, application, close_socket, receive, token_headers

# The tests move their runs themselves: a run they create is not executed (without Redis the
# embedded executor would run it at once, in this process).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dispatched")]

ECHO = [{"tool": "echo"}]


@pytest.fixture
def unpublished(monkeypatch):
    """Every summary is lost in transit: published to nobody (the run ids it would have carried)."""
    lost = []
    monkeypatch.setattr(
        list_feed.publisher, "publish_summary", lambda summary: lost.append(summary["id"]) or True
    )
    return lost


def _users_with_tokens(count: int, *, staff: int = 0) -> list[tuple[object, str]]:
    made = []
    for i in range(count + staff):
        user = get_user_model().objects.create_user(username=f"list-{i}", is_staff=i >= count)
        made.append((user, Token.objects.create(user=user).key))
    return made


users_with_tokens = sync_to_async(_users_with_tokens)
make_run = sync_to_async(lambda owner: services.run_create(owner=owner, steps=ECHO))
start_run = sync_to_async(lambda run: services.run_start(run_id=run.id))


async def open_list(key: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/ws/runs/", headers=token_headers(key))
    connected, _ = await ws.connect(timeout=WAIT)
    assert connected
    hello = await receive(ws)
    assert hello["type"] == "connected", hello
    return ws


async def line_of(ws: WebsocketCommunicator, run_id, *, not_of: set[str] = frozenset()) -> dict:
    """The next run_summary of ``run_id``; none of ``not_of``'s may come before it."""
    while True:
        frame = await receive(ws)
        assert frame["run_id"] not in not_of, frame
        if frame["type"] == "run_summary" and frame["run_id"] == str(run_id):
            return frame


async def test_n_list_sockets_cost_one_statement_per_tick(settings, db_reads):
    """Twenty list sockets of twenty users (one staff) in poll mode: each tick is ONE statement for all.

    Red with the per-socket re-read this replaced (user_stream.py's _refresh,
    commit 77b8532): twenty reads a tick.
    """
    interval = 0.2
    settings.REALTIME_MODE, settings.REALTIME_POLL_INTERVAL = "poll", interval
    people = await users_with_tokens(19, staff=1)
    sockets = []
    try:
        for _, key in people:
            sockets.append(await open_list(key))
        db_reads.clear()  # the connects' snapshots
        began = asyncio.get_running_loop().time()
        runs = [await make_run(user) for user, _ in people[:3]]
        for i, ws in enumerate(sockets):
            mine = runs if i == len(sockets) - 1 else runs[i : i + 1] if i < 3 else []
            for run in mine:  # each socket gets its user's new line (staff's: all three)
                await line_of(ws, run.id)
        # A few more ticks while nothing changes.
        async with asyncio.timeout(WAIT):
            while len(db_reads) < 4:
                await asyncio.sleep(interval / 4)  # a look now and then, not an interleaving
        elapsed = asyncio.get_running_loop().time() - began
    finally:
        for ws in sockets:
            await close_socket(ws)
    # One read per tick at most, however many sockets: the grid's ticks in the time, and one
    # at each end (a tick in flight when the count began).
    assert len(db_reads) <= elapsed / interval + 2, (len(db_reads), elapsed)
    assert {(read.fn, read.statements) for read in db_reads} == {(summaries.summaries_changed_since, 1)}


async def test_a_summary_lost_in_transit_reaches_the_page_at_the_next_tick(
    layer, settings, db_reads, unpublished, user, token
):
    """Push mode, the layer healthy, every summary published to nobody: the poller's next tick brings it.

    Red with the re-read only in poll mode or degraded (the healthy socket
    not watched: user_stream.py's _poll skipped unless degraded).
    """
    settings.REALTIME_MODE = "push"
    settings.REALTIME_LIST_REFRESH_INTERVAL = 0.5
    ws = await open_list(token)
    try:
        run = await make_run(user)
        committed = asyncio.get_running_loop().time()
        frame = await line_of(ws, run.id)
        await start_run(run)
        moved = await line_of(ws, run.id)
    finally:
        await close_socket(ws)
    assert str(run.id) in unpublished  # nothing came by push
    assert frame["payload"]["run"]["status"] == "queued" and frame["seq"] == 0
    assert moved["payload"]["run"]["status"] == "processing" and moved["seq"] == 1
    # The first read that began after the commit carried it.
    after = [read for read in db_reads if read.began > committed]
    assert after[0].fn is summaries.summaries_changed_since
    assert str(run.id) in [s["id"] for s in after[0].result]


@pytest.mark.parametrize("realtime_mode", ["push", "poll"])
async def test_one_users_socket_never_receives_another_users_run(
    realtime_mode, layer, settings, unpublished, user, other_user, staff_user
):
    """Alice's socket gets her runs, Bob's his, staff's both — through the poller's one read for all.

    Red with the fan-out not filtering by owner (list_poller.py's tick handing
    every line to every socket).
    """
    settings.REALTIME_MODE = realtime_mode
    settings.REALTIME_POLL_INTERVAL = settings.REALTIME_LIST_REFRESH_INTERVAL = 0.2
    keys = await sync_to_async(
        lambda: [Token.objects.create(user=u).key for u in (user, other_user, staff_user)]
    )()
    alice, bob, root = [await open_list(key) for key in keys]
    try:
        bobs = await make_run(other_user)
        await line_of(bob, bobs.id)
        await line_of(root, bobs.id)
        alices = await make_run(user)
        await line_of(alice, alices.id, not_of={str(bobs.id)})
        await line_of(root, alices.id)
        # A tick that carries Bob's run again (the overlap) hands Alice nothing of it either.
        await start_run(bobs)
        await line_of(bob, bobs.id)
        await alice.send_to(text_data=json.dumps({"type": "ping"}))
        while (frame := await receive(alice))["type"] != "pong":
            assert frame["run_id"] != str(bobs.id), frame
        await bob.send_to(text_data=json.dumps({"type": "ping"}))
        while (frame := await receive(bob))["type"] != "pong":
            assert frame["run_id"] != str(alices.id), frame
    finally:
        for ws in (alice, bob, root):
            await close_socket(ws)


async def test_a_degraded_socket_is_fed_at_the_poll_interval_then_back_at_its_own(
    layer, settings, monkeypatch, unpublished, user, token
):
    """The layer probe degrades a list socket: the poller re-reads it every REALTIME_POLL_INTERVAL,
    then, recovered, every REALTIME_LIST_REFRESH_INTERVAL again.

    Red with on_layer_down() not changing the socket's interval (an hour here: nothing would come).
    """
    settings.REALTIME_MODE = "push"
    settings.REALTIME_LIST_REFRESH_INTERVAL = 3600.0
    settings.REALTIME_POLL_INTERVAL = 0.1

    async def layer_still_down() -> None:
        """The probe's check: the layer is healthy here, and the probe would recover the socket at once."""

    monkeypatch.setattr(failover.get_probe(), "check", layer_still_down)
    ws = await open_list(token)
    try:
        poller = get_list_poller()
        (socket,) = poller.sockets
        assert poller.interval_of(socket) == 3600.0
        socket.on_layer_down()  # as the probe does when the layer fails
        assert poller.interval_of(socket) == 0.1
        run = await make_run(user)
        assert (await line_of(ws, run.id))["payload"]["run"]["status"] == "queued"
        assert await socket.on_layer_up()
        assert poller.interval_of(socket) == 3600.0
    finally:
        await close_socket(ws)
    assert not get_list_poller().sockets  # unwatched when it closed


async def tick_now(poller: list_poller.ListPoller) -> None:
    """A tick with every page due now (the test ticks the poller itself)."""
    for watch in poller.sockets.values():
        watch.due = 0.0
    await poller.tick()


class _Page:
    """A stand-in list socket: what the poller hands it."""

    def __init__(self, user_id: int, *, sees_all: bool = False):
        self.user_id, self.sees_all = user_id, sees_all
        self.lines: list[tuple[str, int]] = []

    async def on_event(self, run_id: str, seq: int, text: str) -> None:
        assert json.loads(text)["payload"]["run"]["id"] == run_id
        self.lines.append((run_id, seq))


async def test_a_change_committed_after_a_tick_with_an_earlier_timestamp_is_in_the_next(user, monkeypatch):
    """A change's timestamp is taken before its commit: one that commits after a tick, stamped before it,
    is in the next tick's read (the window reaches OVERLAP_SECONDS back).

    Red with OVERLAP_SECONDS = 0 (list_poller.py): the next window starts after its timestamp.
    """
    poller = get_list_poller()
    page = _Page(user.pk)
    poller.watch(page, interval=3600.0, since=timezone.now())
    try:
        stamped = timezone.now()  # the writer takes its timestamp …
        await tick_now(poller)  # … a tick reads before the writer commits …
        assert page.lines == []
        monkeypatch.setattr(log, "timezone", SimpleNamespace(now=lambda: stamped))  # the event's ts
        run = await make_run(user)
        await start_run(run)  # … and its event, stamped then, commits now.
        await tick_now(poller)
    finally:
        poller.unwatch(page)
    assert (str(run.id), 1) in page.lines
    assert list_poller.OVERLAP_SECONDS >= 1


def test_changed_since_reads_the_runs_with_an_event_or_created_after_it(
    user, other_user, django_assert_num_queries
):
    """The selector: runs with an event after ``since`` or created after it, of the owners asked (or all),
    oldest first, in one statement; a run untouched since is not read."""
    old = services.run_create(owner=user, steps=ECHO)
    services.run_start(run_id=old.id)
    since = timezone.now()
    started = services.run_create(owner=user, steps=ECHO)
    services.run_start(run_id=started.id)
    services.step_start(run_id=old.id, index=0)
    queued = services.run_create(owner=other_user, steps=ECHO)
    with django_assert_num_queries(1):
        everyone = summaries.summaries_changed_since(since=since)
    assert [s["id"] for s in everyone] == [str(old.id), str(started.id), str(queued.id)]
    assert everyone == [summaries.run_summary(run_id=s["id"]) for s in everyone]
    assert [s["id"] for s in summaries.summaries_changed_since(since=since, owner_ids={other_user.pk})] == [
        str(queued.id)
    ]
    assert summaries.summaries_changed_since(since=timezone.now() + timedelta(seconds=1)) == []


async def test_a_failed_read_is_asked_again_from_the_same_point_and_warned_once(user, monkeypatch, caplog):
    """The database away at a tick: the next tick reads from where the failed one would have,
    so a change older than the failed tick (by more than the overlap) still comes; one warning, then
    one line when it works again.

    Red with the window moved on before the read (list_poller.py's ``watch.since = read_at`` above the read).
    """
    hour_ago = timezone.now() - timedelta(hours=1)
    monkeypatch.setattr(log, "timezone", SimpleNamespace(now=lambda: hour_ago + timedelta(minutes=1)))
    run = await make_run(user)
    await start_run(run)  # its event stamped 59 minutes ago
    original = summaries.summaries_changed_since
    away = {"reads": 4}  # two ticks: realtime.reads.threads.read tries a failed read once more

    def flaky(**kwargs):
        if away["reads"]:
            away["reads"] -= 1
            raise OperationalError("the database is away")
        return original(**kwargs)

    monkeypatch.setattr(summaries, "summaries_changed_since", flaky)
    poller = get_list_poller()
    page = _Page(user.pk)
    poller.watch(page, interval=3600.0, since=hour_ago)
    try:
        with caplog.at_level(logging.DEBUG, logger="realtime.runlist.list_poller"):
            for _ in range(3):
                await tick_now(poller)
    finally:
        poller.unwatch(page)
    assert page.lines == [(str(run.id), 1)]
    levels = [r.levelno for r in caplog.records if r.name == "realtime.runlist.list_poller"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.INFO]


async def test_a_tick_reads_from_the_earliest_point_any_of_its_sockets_needs(user, monkeypatch):
    """Two pages due at one tick, one last served an hour ago, one just now: the read starts an hour ago,
    so the first still gets a change of 30 minutes ago (the second, whose snapshot had it, drops it by seq).

    Red with the latest point instead (list_poller.py's ``min(watch.since …)`` → ``max``).
    """
    hour_ago = timezone.now() - timedelta(hours=1)
    monkeypatch.setattr(log, "timezone", SimpleNamespace(now=lambda: hour_ago + timedelta(minutes=30)))
    run = await make_run(user)
    await start_run(run)
    poller = get_list_poller()
    behind, fresh = _Page(user.pk), _Page(user.pk)
    poller.watch(behind, interval=3600.0, since=hour_ago)
    poller.watch(fresh, interval=3600.0, since=timezone.now())
    try:
        await tick_now(poller)
    finally:
        poller.unwatch(behind)
        poller.unwatch(fresh)
    assert (str(run.id), 1) in behind.lines


async def test_a_line_re_read_within_the_overlap_is_sent_once_and_never_goes_back(
    settings, db_reads, user, token
):
    """Poll mode: every tick within OVERLAP_SECONDS of a change reads its run again; the socket sends
    each seq once, and a line older than what it sent is dropped.

    Red with the socket's seq check letting an equal seq through (user_stream.py's
    ``seq <= self.seen`` → ``<``): a duplicate line a tick.
    """
    settings.REALTIME_MODE, settings.REALTIME_POLL_INTERVAL = "poll", 0.05
    ws = await open_list(token)
    try:
        run = await make_run(user)
        await start_run(run)
        first = await line_of(ws, run.id)
        if first["seq"] == 0:  # created and started in two ticks
            assert (await line_of(ws, run.id))["seq"] == 1
        db_reads.clear()
        async with asyncio.timeout(WAIT):
            while sum(str(run.id) in [s["id"] for s in read.result] for read in db_reads) < 3:
                await asyncio.sleep(0.05)  # a look now and then, not an interleaving
        (socket,) = get_list_poller().sockets
        stale = await sync_to_async(summaries.run_summary)(run_id=run.id)
        await socket.on_event(str(run.id), 0, json.dumps({"stale": stale}))  # an older line
        await ws.send_to(text_data=json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"  # nothing between: no repeat, nothing older
    finally:
        await close_socket(ws)


async def test_a_page_alone_at_its_tick_is_read_its_users_runs_and_staffs_everyones(
    user, other_user, staff_user, monkeypatch
):
    """A user's page due alone asks for that user's runs only; a staff page due alone, for everyone's:
    it gets another user's run.

    Red with the owners asked for the other way round (list_poller.py's ``None if everyone`` →
    ``None if not everyone``): the staff page is read its own runs only and misses the other user's.
    """
    asked = []
    original = summaries.summaries_changed_since

    def noted(**kwargs):
        asked.append(kwargs["owner_ids"])
        return original(**kwargs)

    monkeypatch.setattr(summaries, "summaries_changed_since", noted)
    since = timezone.now()
    mine, theirs = await make_run(user), await make_run(other_user)
    poller = get_list_poller()
    for page in (_Page(user.pk), _Page(staff_user.pk, sees_all=True)):
        poller.watch(page, interval=3600.0, since=since)
        try:
            await tick_now(poller)
        finally:
            poller.unwatch(page)
        if page.sees_all:
            assert {run_id for run_id, _ in page.lines} == {str(mine.id), str(theirs.id)}
        else:
            assert [run_id for run_id, _ in page.lines] == [str(mine.id)]
    assert asked == [{user.pk}, None]


class _BrokenPage(_Page):
    async def on_event(self, run_id: str, seq: int, text: str) -> None:
        raise ConnectionResetError("the socket went away mid-send")


async def test_a_page_that_fails_to_take_its_lines_does_not_stop_the_others(user, monkeypatch, caplog):
    """Two pages of one user due at one tick, the first breaks on its first line: the second still
    gets the run, and the warning carries the failure's traceback.

    Red with the traceback left out of the warning (list_poller.py's ``exc_info=True`` → ``False``).
    """
    since = timezone.now()
    run = await make_run(user)
    poller = get_list_poller()
    broken, page = _BrokenPage(user.pk), _Page(user.pk)
    poller.watch(broken, interval=3600.0, since=since)
    poller.watch(page, interval=3600.0, since=since)
    try:
        with caplog.at_level(logging.WARNING, logger="realtime.runlist.list_poller"):
            await tick_now(poller)
    finally:
        poller.unwatch(broken)
        poller.unwatch(page)
    assert [run_id for run_id, _ in page.lines] == [str(run.id)]
    (warning,) = [r for r in caplog.records if r.name == "realtime.runlist.list_poller"]
    assert warning.levelno == logging.WARNING
    assert "ConnectionResetError: the socket went away mid-send" in caplog.text  # its traceback


async def test_the_poller_stops_as_soon_as_its_last_page_is_unwatched(user):
    """The poller waiting for a page due in an hour: the page closes, the poller's task ends now.

    Red with unwatch waking the task only for a page it did not watch (list_poller.py's
    ``if self.sockets.pop(...) is not None`` → ``if not ...``): it sleeps until the hour is up.
    """
    poller = get_list_poller()
    looked = asyncio.Event()
    next_due = poller.next_due

    def noted_next_due():
        looked.set()  # named point: the task has read the next due time and goes to wait for it
        return next_due()

    poller.next_due = noted_next_due
    page = _Page(user.pk)
    try:
        poller.watch(page, interval=3600.0)
        task = poller._task
        await asyncio.wait_for(looked.wait(), WAIT)
        poller.unwatch(page)
        await asyncio.wait_for(asyncio.shield(task), WAIT)
        assert not poller.running
    finally:
        poller.unwatch(page)
        del poller.next_due


async def test_each_tick_reads_on_from_the_last_one_not_from_the_start(user, monkeypatch):
    """A page first served an hour ago: its first tick reads the hour, the next one only what came after
    the first (less the overlap), so a page's reads stay the size of the changes since its last tick.

    Red with the window left where it was after a read (list_poller.py's ``for _, watch in due:
    watch.since = read_at`` → ``in []``): every tick reads the whole hour again.
    """
    asked = []
    original = summaries.summaries_changed_since

    def noted(**kwargs):
        asked.append(kwargs["since"])
        return original(**kwargs)

    monkeypatch.setattr(summaries, "summaries_changed_since", noted)
    poller = get_list_poller()
    page = _Page(user.pk)
    first_served = timezone.now() - timedelta(hours=1)
    poller.watch(page, interval=3600.0, since=first_served)
    before = timezone.now()  # the first tick's read begins after this
    try:
        for _ in range(2):
            await tick_now(poller)
    finally:
        poller.unwatch(page)
    overlap = timedelta(seconds=list_poller.OVERLAP_SECONDS)
    assert asked[0] == first_served - overlap
    assert asked[1] >= before - overlap > first_served


async def test_a_change_committed_9_5_s_after_its_timestamp_is_in_the_next_tick(user, monkeypatch):
    """docs/reliability.md's promise: a commit within 10 s of its event's timestamp is on the page by the
    first tick after it. An event stamped 9.5 s before a tick, committed after it, is in the next one.

    Red with a 9 s overlap (list_poller.py's ``OVERLAP_SECONDS = 10.0`` → ``9.0``).
    """
    poller = get_list_poller()
    page = _Page(user.pk)
    poller.watch(page, interval=3600.0, since=timezone.now())
    try:
        stamped = timezone.now() - timedelta(seconds=9.5)  # 9.5 s before the tick's read
        await tick_now(poller)
        monkeypatch.setattr(log, "timezone", SimpleNamespace(now=lambda: stamped))  # the event's ts
        run = await make_run(user)
        await start_run(run)
        await tick_now(poller)
    finally:
        poller.unwatch(page)
    assert (str(run.id), 1) in page.lines


async def test_after_the_database_is_back_a_new_outage_is_warned_again_and_its_end_said_once(
    user, monkeypatch, caplog
):
    """Away, back for two ticks, away again: a warning, one "back" line, a new warning.

    Red with a worked read leaving the ticker marked failing (per_loop.py's ``read_worked``
    ``self._failing = False`` → ``True``): "back" at every tick, and the second outage only at debug.
    """
    original = summaries.summaries_changed_since
    database = {"away": True}

    def flaky(**kwargs):
        if database["away"]:
            raise OperationalError("the database is away")
        return original(**kwargs)

    monkeypatch.setattr(summaries, "summaries_changed_since", flaky)
    poller = get_list_poller()
    page = _Page(user.pk)
    poller.watch(page, interval=3600.0, since=timezone.now())
    try:
        with caplog.at_level(logging.DEBUG, logger="realtime.runlist.list_poller"):
            for away in (True, False, False, True):
                database["away"] = away
                await tick_now(poller)
    finally:
        poller.unwatch(page)
    levels = [r.levelno for r in caplog.records if r.name == "realtime.runlist.list_poller"]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING]


@pytest.mark.parametrize("layer", ["memory"], indirect=True)
async def test_a_closed_page_leaves_the_layer_probe_and_its_groups(layer, settings, staff_user):
    """A page that closes is no longer among the probe's watchers nor in its user's and staff's groups.

    Red with user_stream.py's connect not noting it registered with the probe
    (``registered = True`` → ``False``): the probe kept the closed socket, and
    its task ran on for it; or with ``stop`` cancelling none of the socket's
    tasks (its loop emptied): the layer reader outlived the page. The in-memory
    layer is the one whose memberships a test can read (Channels' own disconnect
    also discards ``groups``).
    """
    settings.REALTIME_MODE = "push"
    key = await sync_to_async(lambda: Token.objects.create(user=staff_user).key)()
    ws = await open_list(key)
    try:
        probe = failover.get_probe()
        (page,) = [c for c in probe.consumers if getattr(c, "user_id", None) == staff_user.pk]
        groups = list(page.groups)
        assert len(groups) == 2 and all(page.channel_name in _members(g) for g in groups)
        reader = page.layer_reader
        assert reader is not None and not reader.done()
    finally:
        await close_socket(ws)
    assert page not in failover.get_probe().consumers
    with contextlib.suppress(asyncio.CancelledError):  # its layer reader ends with it
        await asyncio.wait_for(reader, WAIT)
    assert not any(page.channel_name in _members(g) for g in groups)


def _members(group: str) -> set[str]:
    """The channels in ``group`` on the in-memory layer."""
    return set(get_channel_layer().groups.get(group, {}))


async def test_nothing_comes_before_connected_on_a_list_socket(monkeypatch, user, token):
    """A summary and a deletion the layer brings while the socket reads its snapshot: `connected`
    comes first; the summary is dropped (the snapshot read after it has the run), the deletion
    follows `connected`.

    Red with the layer's messages relayed before `connected` (user_stream.py's connect not
    holding them back while it reads): a run_summary was the socket's first frame.
    """
    run, other = await make_run(user), await make_run(user)
    original = ListStream._read

    async def read_while_the_layer_brings(self):
        if not self.seen:  # the connect's read, not a resync's
            line = {"type": "run_summary", "run_id": str(run.id), "seq": 0, "payload": {}}
            await self.on_event(str(run.id), 0, json.dumps(line))
            await self.on_deleted(str(other.id))
        return await original(self)

    monkeypatch.setattr(ListStream, "_read", read_while_the_layer_brings)
    ws = WebsocketCommunicator(application, "/ws/runs/", headers=token_headers(token))
    connected, _ = await ws.connect(timeout=WAIT)
    assert connected
    try:
        hello = await receive(ws)
        assert hello["type"] == "connected", hello
        assert {line["id"] for line in hello["payload"]["runs"]} == {str(run.id), str(other.id)}
        deleted = await receive(ws)
        assert (deleted["type"], deleted["run_id"]) == ("run_deleted", str(other.id)), deleted
        assert await ws.receive_nothing(timeout=0.2)
    finally:
        await close_socket(ws)
