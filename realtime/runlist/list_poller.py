"""The process's run-list poller: one read per tick for every run-list socket of the process.

A /ws/runs/ socket (realtime.runlist.user_stream) is fed by the publisher's
summaries, which pub/sub delivers at most once: a summary whose publish
failed (it is not retried), one published while the process's subscription
was reconnecting, or one whose writer died between its commit and the
publish, is gone without the layer probe ever seeing the layer down. So the
list is also re-read: every REALTIME_LIST_REFRESH_INTERVAL while the layer is
healthy, every REALTIME_POLL_INTERVAL in poll mode or while the probe has
degraded the socket (then this read is the feed).

A re-read per socket was a statement per socket per interval while nothing
happened — the per-connection polling this product replaces. Here one
``ListPoller`` per event loop (a Daphne process runs one) asks, in ONE
statement per tick, for the summaries of the runs that changed since the due
sockets were last served (summaries.summaries_changed_since: the union of
their users' runs, everyone's when one of them is staff's), encodes each
summary once, and hands each socket the lines it may see — its user's runs,
every run for staff — through its stream's ``on_event``, the path the publisher's
summaries take, so a line whose seq this socket has sent is dropped there.
Cost grows with the runs that change, not with the sockets.

The window reaches OVERLAP_SECONDS before the last tick: a change's timestamp
is taken in its transaction, before its commit, by the writer's clock; a
change committed within that long of it is in the first tick after its
commit. Sockets with the same interval are due at the same tick (the poller's
grid, realtime.delivery.poller.next_slot); the poller runs only while a socket is
watched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.utils import timezone

from realtime.delivery import per_loop
from realtime.delivery.poller import next_slot
from realtime.protocol import frames
from realtime.reads import summaries, threads

logger = logging.getLogger(__name__)

# How far before the last tick each read reaches (see the module's docstring):
# a change's commit may come this long after its timestamp, or a writer's clock
# be this far behind this process's, and the next tick still finds it.
OVERLAP_SECONDS = 10.0


class ListWatcher(Protocol):
    """What the poller needs of a run-list stream (realtime.runlist.user_stream.ListStream)."""

    user_id: int
    sees_all: bool  # staff: every user's runs

    async def on_event(self, run_id: str, seq: int, text: str) -> None:
        """Send the line unless this socket has sent that run's seq (or a later one)."""


@dataclass
class _Watch:
    interval: float
    due: float
    since: datetime  # every change after this (less the overlap) has been offered to the socket


class ListPoller(per_loop.Ticker):
    """Re-reads the run summaries for all of one event loop's list sockets."""

    task_name = "realtime-list-poller"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.sockets: dict[ListWatcher, _Watch] = {}

    def watch(self, socket: ListWatcher, *, interval: float, since: datetime | None = None) -> None:
        """Offer ``socket`` the changes after ``since`` every ``interval`` seconds (or change its interval).

        ``since``: when the socket's snapshot was read (a new socket). Changing
        the interval keeps the due time already set when it comes sooner: a
        socket back from degraded is read once more at its poll slot.
        """
        first_due = next_slot(self.loop.time(), interval)
        current = self.sockets.get(socket)
        if current is None:
            self.sockets[socket] = _Watch(interval=interval, due=first_due, since=since or timezone.now())
        else:
            current.interval = interval
            current.due = min(current.due, first_due)
        self.start()

    def unwatch(self, socket: ListWatcher) -> None:
        """Forget ``socket`` (it is closing). Idempotent."""
        if self.sockets.pop(socket, None) is not None:
            self._wake.set()

    def interval_of(self, socket: ListWatcher) -> float | None:
        watch = self.sockets.get(socket)
        return watch.interval if watch else None

    def next_due(self) -> float | None:
        return min((w.due for w in self.sockets.values()), default=None)

    async def tick(self) -> None:
        """One read for every due socket; then each gets the lines it may see."""
        now = self.loop.time()
        due = [(socket, watch) for socket, watch in self.sockets.items() if watch.due <= now]
        if not due:
            return
        for _, watch in due:
            watch.due = next_slot(now, watch.interval)
        everyone = any(socket.sees_all for socket, _ in due)
        since = min(watch.since for _, watch in due) - timedelta(seconds=OVERLAP_SECONDS)
        read_at = timezone.now()  # before the read: what commits during it is in the next window
        try:
            found = await threads.read(
                summaries.summaries_changed_since,
                since=since,
                owner_ids=None if everyone else {socket.user_id for socket, _ in due},
            )
        except Exception as error:  # noqa: BLE001 - the database is away: the next tick asks from the same point
            warning = f"could not re-read the run lists of {len(due)} sockets (trying again at each tick): %s"
            self.read_failed(logger, "re-reading the run lists", error, warning=warning)
            return
        self.read_worked(logger, "the run lists are re-read again")
        for _, watch in due:
            watch.since = read_at
        if not found:
            return
        # Grouped once by owner: each socket takes its user's lines (staff: all), whatever their number.
        every: list[tuple[str, int, str]] = []
        by_owner: dict[int, list[tuple[str, int, str]]] = {}
        for summary in found:  # oldest run first: new runs arrive in creation order
            line = (summary["id"], summary["seq"], frames.summary_frame_text(summary))
            every.append(line)
            by_owner.setdefault(summary["owner_id"], []).append(line)
        handouts = [
            _hand(socket, every if socket.sees_all else by_owner[socket.user_id])
            for socket, _ in due
            if socket.sees_all or socket.user_id in by_owner
        ]
        await asyncio.gather(*handouts)


async def _hand(socket: ListWatcher, lines: list[tuple[str, int, str]]) -> None:
    try:
        for run_id, seq, text in lines:
            await socket.on_event(run_id, seq, text)
    except Exception:
        # One broken socket must not stop the others' deliveries.
        logger.warning("a run list's re-read lines could not be handed over", exc_info=True)


_pollers: per_loop.Instances[asyncio.AbstractEventLoop, ListPoller] = per_loop.Instances()


def get_list_poller() -> ListPoller:
    """The run-list poller of the running event loop (one per server process)."""
    return per_loop.of_running_loop(_pollers, ListPoller)
