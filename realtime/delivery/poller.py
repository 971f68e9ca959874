"""The process's poller: one query per tick for every polling connection.

One ``Poller`` per event loop (a Daphne process runs one loop) serves every
connection of the process that reads the event log instead of, or as well
as, the channel layer: poll mode, hybrid's safety net, and push connections
that failed over (realtime/delivery/failover.py). Each tick it reads, in ONE query,
every watched run's events above the lowest seq any of that run's watchers
has seen, and which watched runs were deleted (selectors.events_after_cursors),
encodes each event once, and hands
each stream its events through ``on_event`` — the same path push
uses, so dedupe by seq and gap fill apply. Cost grows with the runs watched,
not with the sockets (Hasura's multiplexed live queries do the same).

It needs no channel layer, so it works with Redis absent or down, on
PostgreSQL or SQLite. It starts with the first watcher and stops when none
remain. Watchers can have different intervals (poll 2 s, hybrid 10 s): a tick
queries only the runs that have a watcher due.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from observability import record
from realtime.delivery import per_loop
from realtime.protocol import frames
from realtime.reads import selectors, threads

logger = logging.getLogger(__name__)


class Watcher(Protocol):
    """What the poller needs of a stream (realtime.sockets.run.RunStream)."""

    run_id: uuid.UUID
    last_seq: int

    async def on_event(self, seq: int, text: str, *, final: bool) -> None: ...

    async def on_deleted(self) -> None: ...


@dataclass
class _Watch:
    interval: float
    due: float


class Poller(per_loop.Ticker):
    """Reads the event log for all of one event loop's watchers."""

    task_name = "realtime-poller"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.runs: dict[uuid.UUID, dict[Watcher, _Watch]] = {}

    # --- Registry ----------------------------------------------------------------

    def watch(self, consumer: Watcher, *, interval: float) -> None:
        """Poll ``consumer``'s run for it every ``interval`` seconds (or change its interval)."""
        first_due = next_slot(self.loop.time(), interval)
        watchers = self.runs.setdefault(consumer.run_id, {})
        current = watchers.get(consumer)
        if current is None:
            watchers[consumer] = _Watch(interval=interval, due=first_due)
        else:
            current.interval = interval
            current.due = min(current.due, first_due)
        self.start()

    def unwatch(self, consumer: Watcher) -> None:
        watchers = self.runs.get(consumer.run_id)
        if watchers is not None and watchers.pop(consumer, None) is not None:
            if not watchers:
                del self.runs[consumer.run_id]
            self._wake.set()

    def interval_of(self, consumer: Watcher) -> float | None:
        watch = self.runs.get(consumer.run_id, {}).get(consumer)
        return watch.interval if watch else None

    # --- Ticking -----------------------------------------------------------------

    def next_due(self) -> float | None:
        return min((w.due for ws in self.runs.values() for w in ws.values()), default=None)

    async def tick(self) -> None:
        """One query for every run with a due watcher; then hand out the events."""
        now = self.loop.time()
        due: list[tuple[uuid.UUID, Watcher]] = []
        cursors: dict[uuid.UUID, int] = {}
        for run_id, watchers in self.runs.items():
            for consumer, watch in watchers.items():
                if watch.due <= now:
                    watch.due = next_slot(now, watch.interval)
                    due.append((run_id, consumer))
                    cursors[run_id] = min(cursors.get(run_id, consumer.last_seq), consumer.last_seq)
        if not cursors:
            return
        started = time.monotonic()
        try:
            polled = await threads.read(selectors.events_after_cursors, cursors=cursors)
        except Exception:
            # The database blipped: the next tick asks again from the same cursors.
            logger.warning("poll of %d runs failed", len(cursors), exc_info=True)
            return
        found = polled.events
        record.poll_tick(
            runs=len(cursors), watchers=len(due), rows=len(found), seconds=time.monotonic() - started
        )
        if polled.gone:
            # A deleted run's watchers get its `run_deleted` and are closed.
            ended = [consumer.on_deleted() for run_id, consumer in due if run_id in polled.gone]
            await asyncio.gather(*ended, return_exceptions=True)
        by_run: dict[uuid.UUID, list[tuple[int, str, bool]]] = {}
        for event in found:
            by_run.setdefault(event.run_id, []).append(
                (event.seq, frames.encode_event(event), frames.is_final(event.type))
            )
        handouts = [_hand(consumer, by_run[run_id]) for run_id, consumer in due if run_id in by_run]
        if handouts:
            await asyncio.gather(*handouts)


def next_slot(now: float, interval: float) -> float:
    """The next multiple of ``interval`` after ``now``.

    Due times sit on one grid per interval, so every watcher with the same
    interval is due at the same tick — one query per interval for all of them,
    however staggered their connects were (not one per connect time).
    """
    return (math.floor(now / interval) + 1) * interval


async def _hand(consumer: Watcher, found: list[tuple[int, str, bool]]) -> None:
    try:
        for seq, text, final in found:
            if seq > consumer.last_seq:
                await consumer.on_event(seq, text, final=final)
    except Exception:
        # One broken socket must not stop the others' deliveries.
        logger.warning("poll delivery to a watcher of run %s failed", consumer.run_id, exc_info=True)


_pollers: per_loop.Instances[asyncio.AbstractEventLoop, Poller] = per_loop.Instances()


def get_poller() -> Poller:
    """The poller of the running event loop (one per server process)."""
    return per_loop.of_running_loop(_pollers, Poller)
