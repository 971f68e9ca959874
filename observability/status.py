"""The host's realtime status: what each process reports, and what the staff page shows.

Every process (Daphne, a Celery worker and its pool children) writes a small
snapshot of itself — its sockets per run and mode, rates, latency, failover
state — into one Redis hash every OBSERVABILITY_REPORT_INTERVAL. The staff
page reads the hash, drops what stopped reporting, and adds the health of the
database and the channel layer. Without Redis (embedded mode) the one process
reports to itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from django.conf import settings

from observability import stats
from observability.health import OK, check_database, check_redis_servers, redis_servers
from server import upstream

# A web process that missed this many reports is gone; a worker is "seen recently" for a minute.
STALE_REPORTS = 3
WORKER_SEEN_SECONDS = 60.0
REDIS_TIMEOUT = 1.0

_client = None
_client_pid = None


def hash_key() -> str:
    # The queue names the deployment within a Redis database (the tests give each session its own).
    return f"quikday:observability:{settings.CELERY_TASK_DEFAULT_QUEUE}:processes"


def _redis():
    global _client, _client_pid
    if not settings.REDIS_URL:
        return None
    if _client is None or _client_pid != os.getpid():
        import redis

        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
        )
        _client_pid = os.getpid()
    return _client


def snapshot(process: stats.ProcessStats, *, figures: dict[str, float | None], name: str) -> dict[str, Any]:
    """This process, for the page: sockets per run and mode, failover state, and ``figures``
    (events/s, frames/s, latency p50/p99 over the last LOG_STATS_INTERVAL)."""
    return {
        "name": name,
        "host": socket.gethostname(),
        "pid": process.pid,
        "role": process.role,
        "at": time.time(),
        "sockets": process.by_mode(),
        "watchers": process.watchers(),
        "degraded": process.degraded(),
        "failovers": process.counts.failovers,
        "recoveries": process.counts.recoveries,
        "resyncs": process.counts.resyncs,
        **figures,
    }


_local: dict[str, Any] | None = None


def publish(report: dict[str, Any]) -> None:
    """Store this process's snapshot where the staff page finds it."""
    global _local
    _local = report
    client = _redis()
    if client is not None:
        client.hset(hash_key(), f"{report['host']}:{report['pid']}", json.dumps(report))


def withdraw(process: stats.ProcessStats) -> None:
    """This process stops: its snapshot goes at once."""
    client = _redis()
    if client is not None:
        client.hdel(hash_key(), f"{socket.gethostname()}:{process.pid}")


def reports() -> list[dict[str, Any]]:
    """Every process's latest snapshot, newest first; long-gone ones are deleted."""
    client = _redis()
    if client is None:
        return [_local] if _local else []
    now = time.time()
    found, stale = [], []
    for field, raw in client.hgetall(hash_key()).items():
        report = json.loads(raw)
        if now - report["at"] > max(
            WORKER_SEEN_SECONDS, STALE_REPORTS * settings.OBSERVABILITY_REPORT_INTERVAL
        ):
            stale.append(field)
        else:
            found.append(report)
    if stale:
        client.hdel(hash_key(), *stale)
    return sorted(found, key=lambda report: -report["at"])


def channel_layer_health() -> str:
    """ "ok", or "unavailable: " and the servers of REALTIME_REDIS_URLS that did not answer."""
    if not settings.REDIS_URL:
        return "in-memory (this process)"
    shards = {name: url for name, url in redis_servers().items() if name.startswith("channel_layer[")}
    down = [name for name, state in check_redis_servers(shards).items() if state != OK]
    return f"unavailable: {', '.join(down)}" if down else OK


def page_data() -> dict[str, Any]:
    """The staff page's JSON: runs watched, rates, latency, health, failover, workers."""
    now = time.time()
    live_after = now - STALE_REPORTS * settings.OBSERVABILITY_REPORT_INTERVAL
    everyone = reports()
    live = [report for report in everyone if report["at"] >= live_after]
    runs: dict[str, dict[str, Any]] = {}
    sockets: dict[str, int] = {}
    for report in live:
        for mode, count in report["sockets"].items():
            sockets[mode] = sockets.get(mode, 0) + count
        for run_id, modes in report["watchers"].items():
            entry = runs.setdefault(run_id, {"run_id": run_id, "sockets": 0, "modes": {}, "processes": []})
            for mode, count in modes.items():
                entry["sockets"] += count
                entry["modes"][mode] = entry["modes"].get(mode, 0) + count
            entry["processes"].append(report["name"])
    p99s = [report["latency_p99_ms"] for report in live if report["latency_p99_ms"] is not None]
    return {
        "at": now,
        "runs": sorted(runs.values(), key=lambda entry: (-entry["sockets"], entry["run_id"])),
        "sockets": sockets,
        "events_per_second": round(sum(r["events_per_second"] for r in live), 2),
        "frames_per_second": round(sum(r["frames_per_second"] for r in live), 2),
        "latency_p99_ms": max(p99s) if p99s else None,
        "database": check_database(),
        "channel_layer": channel_layer_health(),
        "upstream": upstream.unverified(),
        "failover": {
            "degraded_sockets": sum(r["degraded"] for r in live),
            "failovers": sum(r["failovers"] for r in live),
            "recoveries": sum(r["recoveries"] for r in live),
        },
        "processes": [
            {key: r[key] for key in ("name", "role", "pid", "host", "sockets", "degraded")}
            | {"seen_seconds_ago": round(now - r["at"], 1)}
            for r in live
        ],
        "workers": [
            {"name": r["name"], "seen_seconds_ago": round(now - r["at"], 1)}
            for r in everyone
            if r["role"] == "worker"
        ],
    }
