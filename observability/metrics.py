"""The Prometheus metrics: their names, kinds, labels and buckets. Definitions only.

observability.record updates them; /metrics (observability.views) exposes
them, summed over the host's processes in multiprocess mode (see
observability.multiproc). docs/operations.md says what each one means.
"""

from __future__ import annotations

from observability import multiproc

multiproc.ensure_dir()  # before the first metric: each one opens its file there

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402 - after the directory exists

# Commit → send is milliseconds when push works and seconds when it polls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

WEBSOCKETS_OPEN = Gauge(
    "quikday_websockets_open",
    "WebSocket connections open now, by mode (push, poll, hybrid; list: the run-list stream /ws/runs/).",
    ["mode"],
    multiprocess_mode="livesum",
)
WEBSOCKET_CONNECTS = Counter(
    "quikday_websocket_connects", "WebSocket connections accepted, by mode.", ["mode"]
)
WEBSOCKET_DISCONNECTS = Counter(
    "quikday_websocket_disconnects",
    "WebSocket connections ended, by mode and close code (1006: dropped without a close).",
    ["mode", "code"],
)
EVENTS = Counter("quikday_events", "Events appended to the event log and committed, by type.", ["type"])
FRAMES_SENT = Counter(
    "quikday_frames_sent",
    "Frames sent to WebSocket clients: live (events as they happen), replay (the backlog of "
    "?since=), control (connected, pong, error).",
    ["kind"],
)
COMMIT_TO_SEND = Histogram(
    "quikday_commit_to_send_seconds",
    "From an event's ts (written in the committing transaction) to its send to a client, live frames.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_FAILURES = Counter(
    "quikday_publish_failures", "Publishes the channel layer did not take (the event stays in the log)."
)
PUBLISH_RETRIES = Counter(
    "quikday_publish_retries",
    "Background re-publishes of failed events that ended: published, or gave_up.",
    ["outcome"],
)
POLL_TICKS = Counter("quikday_poll_ticks", "Poller ticks with at least one watcher due.")
POLL_QUERIES = Counter("quikday_poll_queries", "Event-log queries the pollers made (one per tick).")
POLL_RUNS = Counter("quikday_poll_runs", "Runs read by poller queries (summed over queries).")
POLL_ROWS = Counter("quikday_poll_rows", "Events the poller queries returned.")
POLL_QUERIES_PER_CONNECTION = Counter(
    "quikday_poll_queries_per_connection",
    "Queries the old design (every open socket polls every 2 s) would have made meanwhile.",
)
POLL_QUERIES_AVOIDED = Gauge(
    "quikday_poll_queries_avoided",
    "Per-connection polling's queries minus the poll queries made, since each process started "
    "(summed over processes, dead ones included).",
    multiprocess_mode="sum",
)
FAILOVERS = Counter("quikday_failovers", "Push connections that fell back to polling (layer failed).")
RECOVERIES = Counter("quikday_recoveries", "Connections back on push after a failover.")
SLOW_CLIENT_RESYNCS = Counter(
    "quikday_slow_client_resyncs",
    "Clients too slow to keep up whose frames were dropped and who were resynced from the log.",
)
RUN_DURATION = Histogram(
    "quikday_run_duration_seconds",
    "From a run's start to its end, by final status.",
    ["status"],
    buckets=DURATION_BUCKETS,
)
STEP_DURATION = Histogram(
    "quikday_step_duration_seconds",
    "From a step's start to its end, by final status and tool.",
    ["status", "tool"],
    buckets=DURATION_BUCKETS,
)
RESIDENT_MEMORY = Gauge(
    "quikday_process_resident_memory_bytes",
    "Resident memory of each process (pid label), by role: web, worker, worker-child.",
    ["role"],
    multiprocess_mode="liveall",
)

# Series that exist from a process's start, at zero: a rate() needs the zero, and a
# dashboard shows "0 open sockets" rather than "no data".
for _mode in ("push", "poll", "hybrid", "list"):
    WEBSOCKETS_OPEN.labels(_mode)
    WEBSOCKET_CONNECTS.labels(_mode)
for _outcome in ("published", "gave_up"):
    PUBLISH_RETRIES.labels(_outcome)
