"""Each process's reporter thread: RSS, queries avoided, the staff page's snapshot, the 📊 line.

Started once per process — a Daphne process's when its server first calls
quikday.asgi's application, a Celery worker's main process when it is ready,
each pool child as it starts (realtime.signals) — it wakes every
OBSERVABILITY_REPORT_INTERVAL and writes a 📊 line every
LOG_STATS_INTERVAL. It never touches the database.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings

from observability import metrics, record, stats, status

logger = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    """This process's resident set size in bytes (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Reading:
    """A process's cumulative figures at one moment."""

    at: float
    events: int
    frames: int
    latency_buckets: list[int]

    @classmethod
    def now(cls, process: stats.ProcessStats) -> Reading:
        frames, buckets = record.frame_figures()
        return cls(time.monotonic(), process.counts.events, frames, buckets)


def window_figures(old: Reading, new: Reading) -> dict[str, float | None]:
    """Events/s, frames/s and commit → send p50/p99 (ms) between two readings."""
    elapsed = max(new.at - old.at, 1e-9)
    counts = [b - a for a, b in zip(old.latency_buckets, new.latency_buckets, strict=True)]
    p50, p99 = (stats.quantile(counts, metrics.LATENCY_BUCKETS, q) for q in (0.5, 0.99))
    return {
        "events_per_second": round((new.events - old.events) / elapsed, 2),
        "frames_per_second": round((new.frames - old.frames) / elapsed, 2),
        "latency_p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "latency_p99_ms": None if p99 is None else round(p99 * 1000, 2),
    }


class Reporter:
    def __init__(self, role: str, name: str) -> None:
        self.role = role
        self.name = name
        self.pid = os.getpid()
        self.process = stats.reset(role)
        self._stop = threading.Event()
        # Readings of the last LOG_STATS_INTERVAL: the page and the 📊 line look back that far.
        self._readings: deque[Reading] = deque([Reading.now(self.process)])
        self._last_stats = self._readings[0]
        self._stats_due = time.monotonic() + settings.LOG_STATS_INTERVAL
        self.thread = threading.Thread(target=self._run, name=f"observability-{role}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:  # the first report at once: a worker is "seen" as soon as it is ready
            try:
                self.report()
            except Exception:  # a report that fails (Redis down) is simply missed
                logger.debug("observability report failed", exc_info=True)
            if self._stop.wait(settings.OBSERVABILITY_REPORT_INTERVAL):
                return

    def report(self) -> None:
        process = self.process
        if record.metrics_on():
            record.flush()
            metrics.POLL_QUERIES_PER_CONNECTION.inc(process.account_open_sockets())
            metrics.POLL_QUERIES_AVOIDED.set(process.per_connection_queries - process.counts.poll_queries)
            metrics.RESIDENT_MEMORY.labels(self.role).set(resident_memory())
        reading = Reading.now(process)
        self._readings.append(reading)
        while len(self._readings) > 2 and reading.at - self._readings[1].at >= settings.LOG_STATS_INTERVAL:
            self._readings.popleft()
        if reading.at >= self._stats_due:
            self._stats_due = reading.at + settings.LOG_STATS_INTERVAL
            self.log_stats(window_figures(self._last_stats, reading))
            self._last_stats = reading
        status.publish(
            status.snapshot(process, figures=window_figures(self._readings[0], reading), name=self.name)
        )

    def log_stats(self, figures: dict[str, float | None]) -> None:
        process = self.process
        by_mode = process.by_mode()
        record.line(
            logging.INFO, "stats", "stats",
            role=self.role,
            sockets=sum(by_mode.values()),
            push=by_mode.get("push", 0), poll=by_mode.get("poll", 0), hybrid=by_mode.get("hybrid", 0),
            runs_watched=len(process.watchers()),
            events_per_s=figures["events_per_second"], frames_per_s=figures["frames_per_second"],
            latency_p50_ms=figures["latency_p50_ms"], latency_p99_ms=figures["latency_p99_ms"],
            resyncs=process.counts.resyncs, failovers=process.counts.failovers,
            degraded=process.degraded(), rss_mb=round(resident_memory() / 2**20, 1),
        )  # fmt: skip


_reporter: Reporter | None = None
_guard = threading.Lock()


def start(role: str, *, name: str = "") -> Reporter:
    """Start this process's reporter (once per process; a forked child starts its own)."""
    global _reporter
    with _guard:
        if _reporter is None or _reporter.pid != os.getpid():
            _reporter = Reporter(role, name or f"{role}@{os.uname().nodename}:{os.getpid()}")
            _reporter.start()
    return _reporter


def stop() -> None:
    """This process ends: no more reports, its snapshot withdrawn, its live gauges dropped."""
    from observability import multiproc

    global _reporter
    with _guard:
        reporter, _reporter = _reporter, None
    if reporter is not None and reporter.pid == os.getpid():
        reporter.stop()
        try:
            status.withdraw(reporter.process)
        except Exception:
            logger.debug("could not withdraw this process's snapshot", exc_info=True)
    multiproc.process_exiting()
