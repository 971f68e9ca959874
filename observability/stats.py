"""This process's own figures: its open connections and its counts.

Prometheus keeps the totals (observability.metrics); this keeps what a
process reports about itself — the connection table the admin's Realtime page
lists, and the counts of the 📊 line (frames and latencies are counted per
frame in observability.record's tally; ``quantile`` reads percentiles off its
buckets). Updated from the event loop and from request/worker threads, read by
the reporter thread.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# The old design's per-connection poll interval: the baseline of "queries avoided".
LEGACY_POLL_INTERVAL = 2.0
NO_RUN = "-"  # the run id of a socket that watches no single run (the run-list stream)


@dataclass(eq=False, slots=True)
class Connection:
    """One WebSocket, as the logs and the Realtime page know it."""

    conn_id: str
    mode: str
    run_id: str
    opened: float  # time.monotonic()
    accounted: float  # socket-seconds counted up to here (queries avoided)
    frames: int = 0
    degraded: bool = False
    closed: bool = False


@dataclass
class Counts:
    events: int = 0
    resyncs: int = 0
    failovers: int = 0
    recoveries: int = 0
    publish_failures: int = 0
    poll_queries: int = 0
    poll_rows: int = 0


@dataclass
class ProcessStats:
    role: str
    pid: int = field(default_factory=os.getpid)
    counts: Counts = field(default_factory=Counts)
    connections: dict[str, Connection] = field(default_factory=dict)
    per_connection_queries: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, *, mode: str, run_id: str) -> Connection:
        now = time.monotonic()
        conn = Connection(
            conn_id=f"{self.pid}-{next(self._ids)}", mode=mode, run_id=run_id, opened=now, accounted=now
        )
        with self._lock:
            self.connections[conn.conn_id] = conn
        return conn

    def close(self, conn: Connection) -> bool:
        """Forget ``conn``; False when it was closed already."""
        with self._lock:
            if conn.closed:
                return False
            conn.closed = True
            self.connections.pop(conn.conn_id, None)
            self.per_connection_queries += (time.monotonic() - conn.accounted) / LEGACY_POLL_INTERVAL
        return True

    def open_connections(self) -> list[Connection]:
        with self._lock:
            return list(self.connections.values())

    def account_open_sockets(self) -> float:
        """Count the open sockets' time since last asked; return the legacy polls it adds up to."""
        now = time.monotonic()
        with self._lock:
            seconds = 0.0
            for conn in self.connections.values():
                seconds += now - conn.accounted
                conn.accounted = now
            self.per_connection_queries += seconds / LEGACY_POLL_INTERVAL
        return seconds / LEGACY_POLL_INTERVAL

    def by_mode(self) -> dict[str, int]:
        modes: dict[str, int] = {}
        for conn in self.open_connections():
            modes[conn.mode] = modes.get(conn.mode, 0) + 1
        return modes

    def watchers(self) -> dict[str, dict[str, int]]:
        """run id → mode → sockets of this process."""
        runs: dict[str, dict[str, int]] = {}
        for conn in self.open_connections():
            if conn.run_id == NO_RUN:
                continue  # a run-list socket watches no single run
            modes = runs.setdefault(conn.run_id, {})
            modes[conn.mode] = modes.get(conn.mode, 0) + 1
        return runs

    def degraded(self) -> int:
        return sum(1 for conn in self.open_connections() if conn.degraded)


def quantile(counts: Sequence[int], bounds: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of observations counted per bucket (``bounds`` the upper bounds, then +Inf).

    Linear within the bucket, as Prometheus' histogram_quantile; None without observations.
    """
    total = sum(counts)
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for count, upper in zip(counts, [*bounds, bounds[-1]], strict=True):
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return bounds[-1]


_stats: ProcessStats | None = None


def current() -> ProcessStats:
    """This process's stats (a forked child starts with its own)."""
    global _stats
    if _stats is None or _stats.pid != os.getpid():
        _stats = ProcessStats(role=_stats.role if _stats is not None else "process")
    return _stats


def reset(role: str) -> ProcessStats:
    global _stats
    _stats = ProcessStats(role=role)
    return _stats
