"""The one-line calls the realtime code makes: each updates the metrics, this process's
stats and, where it is a lifecycle event, writes its log line.

Lines go to the ``quikday.lifecycle`` logger (frames to ``quikday.frames``, at
DEBUG) with their fields as ``extra`` (see observability.logs). They only
count and log — no database, no network — so a delivery or a commit never
waits on them. With METRICS_ENABLED off the metrics and stats are skipped
(logs stay).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from datetime import datetime
from typing import Any

from django.conf import settings

from observability import metrics, stats
from observability.health import mode_summary
from observability.stats import Connection
from server import upstream

logger = logging.getLogger("quikday.lifecycle")
frames_logger = logging.getLogger("quikday.frames")  # DEBUG: one line per frame

_FRAME_KINDS = ("live", "replay", "control")
_ON: bool | None = None


class _Children(dict):
    """A labelled metric's children by label values (a value, or a tuple of them), each looked up once.

    ``labels()`` turns every value into a string and takes the metric's lock on
    every call; the children never change, so the hooks keep them.
    """

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: Any) -> Any:
        child = self[key] = self.metric.labels(*(key if isinstance(key, tuple) else (key,)))
        return child


_frames_sent = _Children(metrics.FRAMES_SENT)
_connects = _Children(metrics.WEBSOCKET_CONNECTS)
_open = _Children(metrics.WEBSOCKETS_OPEN)
_disconnects = _Children(metrics.WEBSOCKET_DISCONNECTS)
_events = _Children(metrics.EVENTS)
_step_durations = _Children(metrics.STEP_DURATION)
_run_durations = _Children(metrics.RUN_DURATION)


def metrics_on() -> bool:
    global _ON
    if _ON is None:
        _ON = settings.METRICS_ENABLED
    return _ON


def line(level: int, event: str, text: str, *, to: logging.Logger = logger, **fields: Any) -> None:
    """One lifecycle line: ``text`` then ``key=value`` for each field; the fields as extra too."""
    if not to.isEnabledFor(level):
        return
    rendered = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    to.log(level, "%s %s", text, rendered, extra={"event": event, **fields})


def worker_started(*, name: str) -> None:
    """The 🔌 line of a Celery worker (the web's is observability.health.log_mode)."""
    summary = mode_summary()
    line(
        logging.INFO, "startup", "Quik.day Realtime worker ready", worker=name, mode=summary["mode"],
        database=summary["database"], channel_layer=summary["channel_layer"], executor=summary["executor"],
        realtime=summary["realtime"],
    )  # fmt: skip


# --- Connections ------------------------------------------------------------------------


def socket_opened(*, mode: str, run_id: Any) -> Connection:
    """A WebSocket was accepted; the returned handle goes to every later call about it."""
    conn = stats.current().open(mode=mode, run_id=str(run_id or stats.NO_RUN))
    if metrics_on():
        _connects[mode].inc()
        _open[mode].inc()
    line(logging.INFO, "connect", "connect", run_id=conn.run_id, conn_id=conn.conn_id, mode=mode)
    return conn


def socket_closed(conn: Connection | None, code: int | None) -> None:
    """The WebSocket ended (``code`` None: cancelled without a close, counted as 1006). Idempotent."""
    if conn is None or not stats.current().close(conn):
        return
    code = 1006 if code is None else code
    if metrics_on():
        _open[conn.mode].dec()
        _disconnects[conn.mode, code].inc()
    line(
        logging.INFO, "disconnect", "disconnect", run_id=conn.run_id, conn_id=conn.conn_id, mode=conn.mode,
        code=code, duration=f"{time.monotonic() - conn.opened:.3f}s", frames=conn.frames,
    )  # fmt: skip


def frame_sent(conn: Connection | None, kind: str, text: str) -> None:
    """A frame went to the client: ``live`` (an event as it happens), ``replay`` or ``control``.

    Called once per frame per socket — the hottest call here — so it only counts in
    plain Python; ``flush`` hands the counts to Prometheus (each process's reporter
    does every OBSERVABILITY_REPORT_INTERVAL, and /metrics before it answers).
    """
    if conn is not None:
        conn.frames += 1
    if metrics_on():
        _tally.frames[kind] += 1
        if kind == "live":
            committed_at = _event_time(text)
            if committed_at is not None:
                _tally.observe(max(0.0, time.time() - committed_at))
    if frames_logger.isEnabledFor(logging.DEBUG):
        frame = json.loads(text)
        line(
            logging.DEBUG, "frame", "frame", to=frames_logger, run_id=frame.get("run_id"),
            conn_id=conn.conn_id if conn else None, type=frame.get("type"), seq=frame.get("seq"), kind=kind,
            bytes=len(text),
        )  # fmt: skip


class _FrameTally:
    """Per-frame figures of this process, not yet handed to Prometheus."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.frames = dict.fromkeys(_FRAME_KINDS, 0)
        self.buckets = [0] * (len(metrics.LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self._flushed = (dict(self.frames), list(self.buckets), 0.0)
        # Whether the histogram's values take a batch (server.upstream "prometheus-histogram-batch";
        # None until the first latency). If not, the flush observes each latency in ``unbatched``.
        self.batched: bool | None = None
        self.unbatched: list[float] = []

    def observe(self, latency: float) -> None:
        self.buckets[bisect.bisect_left(metrics.LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency
        if self.batched is None:
            self.batched = upstream.usable("prometheus-histogram-batch")
        if not self.batched:
            self.unbatched.append(latency)

    def flush(self) -> None:
        frames, buckets, latency_sum = dict(self.frames), list(self.buckets), self.latency_sum
        before_frames, before_buckets, before_sum = self._flushed
        self._flushed = (frames, buckets, latency_sum)
        for kind, count in frames.items():
            if count > before_frames[kind]:
                _frames_sent[kind].inc(count - before_frames[kind])
        histogram = metrics.COMMIT_TO_SEND
        if not self.batched:
            pending, self.unbatched = self.unbatched, []
            for latency in pending:
                histogram.observe(latency)
            return
        # prometheus-client keeps a histogram's buckets and sum as these values; adding
        # to them is observe() for a batch (tests/observability checks the result).
        for index, count in enumerate(buckets):
            if count > before_buckets[index]:
                histogram._buckets[index].inc(count - before_buckets[index])
        if latency_sum > before_sum:
            histogram._sum.inc(latency_sum - before_sum)


_tally = _FrameTally()
_flush_guard = threading.Lock()


def frame_figures() -> tuple[int, list[int]]:
    """This process's frames sent so far, and its live frames' latencies counted per bucket."""
    return sum(_tally.frames.values()), list(_tally.buckets)


def flush() -> None:
    """Hand this process's batched per-frame counts to Prometheus."""
    global _tally
    with _flush_guard:
        if _tally.pid != os.getpid():
            _tally = _FrameTally()  # a forked child: the parent reports what it counted
            return
        _tally.flush()


_last_text: str | None = None
_last_time: float | None = None


def _event_time(text: str) -> float | None:
    """The frame's ``ts`` as a Unix time, read without decoding the JSON.

    A fan-out hands every watcher the very same string, so the last answer is kept.
    """
    global _last_text, _last_time
    if text is _last_text:
        return _last_time
    start = text.find('"ts":"')
    value = None
    if start >= 0:
        try:
            value = datetime.fromisoformat(text[start + 6 : start + 33]).timestamp()
        except ValueError:
            value = None
    _last_text, _last_time = text, value
    return value


# --- Transport state ---------------------------------------------------------------------


def transport_changed(conn: Connection | None, *, run_id: Any, degraded: bool) -> None:
    """A push connection fell back to polling (``degraded``: the layer failed it), or is back on push."""
    if conn is not None:
        conn.degraded = degraded
    if metrics_on():
        counts = stats.current().counts
        if degraded:
            metrics.FAILOVERS.inc()
            counts.failovers += 1
        else:
            metrics.RECOVERIES.inc()
            counts.recoveries += 1
    # DEBUG: one WARNING per outage comes from realtime.delivery.failover; these lines are per connection.
    event, text = (
        ("failover", "watcher falls back to polling") if degraded else ("recovery", "watcher is back on push")
    )
    line(logging.DEBUG, event, text, run_id=run_id, conn_id=conn.conn_id if conn else None)


def slow_client_resync(conn: Connection | None, *, run_id: Any, dropped: int = 0) -> None:
    """A client too slow to keep up lost its queued frames and is resynced from the log."""
    if metrics_on():
        metrics.SLOW_CLIENT_RESYNCS.inc()
        stats.current().counts.resyncs += 1
    line(
        logging.WARNING, "resync", "slow client resynced", run_id=run_id,
        conn_id=conn.conn_id if conn else None, dropped=dropped,
    )  # fmt: skip


def poll_tick(*, runs: int, watchers: int, rows: int, seconds: float) -> None:
    """One poller query: INFO when it found events, DEBUG when idle (a line every tick would drown)."""
    if metrics_on():
        metrics.POLL_TICKS.inc()
        metrics.POLL_QUERIES.inc()
        metrics.POLL_RUNS.inc(runs)
        metrics.POLL_ROWS.inc(rows)
        counts = stats.current().counts
        counts.poll_queries += 1
        counts.poll_rows += rows
    line(
        logging.INFO if rows else logging.DEBUG, "poll", "poll", runs=runs, watchers=watchers, rows=rows,
        time=f"{seconds * 1000:.1f}ms",
    )  # fmt: skip


# --- The event log -----------------------------------------------------------------------


def event_committed(event: Any) -> None:
    """An event of the log committed (``event``: run_id, seq, type, payload): 📝 and its counts."""
    payload = event.payload or {}
    step = payload.get("step") if isinstance(payload.get("step"), dict) else None
    status = (step or payload).get("status")
    duration = _duration((step or payload).get("started_at"), (step or payload).get("finished_at"))
    if metrics_on():
        _events[event.type].inc()
        stats.current().counts.events += 1
        if duration is not None and status is not None:
            if step is not None:
                _step_durations[status, str(step.get("tool", ""))].observe(duration)
            elif event.type == "run_completed":
                _run_durations[status].observe(duration)
    line(
        logging.INFO, "state", event.type, run_id=event.run_id, seq=event.seq,
        step=step.get("index") if step else None, tool=step.get("tool") if step else None, status=status,
        duration=f"{duration:.3f}s" if duration is not None else None,
    )  # fmt: skip


def _duration(started: Any, finished: Any) -> float | None:
    if not started or not finished:
        return None
    try:
        return max(0.0, (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds())
    except (TypeError, ValueError):
        return None


def publish_failed() -> None:
    """A publish the layer did not take (realtime.events.publisher logs the line itself)."""
    if metrics_on():
        metrics.PUBLISH_FAILURES.inc()
        stats.current().counts.publish_failures += 1


def publish_retried(*, outcome: str) -> None:
    """A background re-publish ended: ``published`` or ``gave_up`` (logged by the publisher)."""
    if metrics_on():
        metrics.PUBLISH_RETRIES.labels(outcome).inc()
