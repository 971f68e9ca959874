"""How long an event's own statements take a writer, between its ``ts`` and its commit's end.

A frame's ``ts`` is stamped just before the event's INSERT (realtime.events.log),
so a watcher's latency counts that INSERT and the COMMIT after it. This times
both, as the writer sees them (wall time, p50 and p99 of ``--events``), through
realtime.events.log.append in a transaction of its own: once with a pause
before each transaction (``--pauses``, seconds: a writer at 20 ev/s waits
~50 ms between events, and its PostgreSQL backend sleeps meanwhile) and once
back to back, interleaved.

Usage: python bench/append_latency.py [--events 300] [--pauses 0.05,0,0.05,0]
  (DATABASE_URL's server, in bench/write_cost.py's database; REDIS_URL's Redis.)
One JSON line per pause.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trial(pause: float, events: int, run_id) -> dict:
    from django.db import transaction
    from django.db.backends.base.base import BaseDatabaseWrapper

    from bench.client import percentiles
    from realtime.events import log

    inserts, commits = [], []
    committing = BaseDatabaseWrapper._commit

    def timed_commit(self):
        began = time.perf_counter()
        try:
            return committing(self)
        finally:
            commits.append((time.perf_counter() - began) * 1000)

    BaseDatabaseWrapper._commit = timed_commit
    try:
        for index in range(events):
            time.sleep(pause)
            with transaction.atomic():
                began = time.perf_counter()
                log.append(run_id=run_id, type="step_started", payload={"step": {"index": index}})
                inserts.append((time.perf_counter() - began) * 1000)
    finally:
        BaseDatabaseWrapper._commit = committing
    insert, commit = percentiles(inserts), percentiles(commits)
    return {
        "pause_s": pause,
        "events": events,
        "append_p50_ms": round(insert["p50"], 3),
        "append_p99_ms": round(insert["p99"], 3),
        "commit_p50_ms": round(commit["p50"], 3),
        "commit_p99_ms": round(commit["p99"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--pauses", default="0.05,0,0.05,0")
    args = parser.parse_args()
    from bench.write_cost import setup_web_tool

    _, user, _ = setup_web_tool("append-latency")
    from realtime.events import publisher
    from runs import services

    publisher.connect_publisher()  # as a worker does: the first publish does not wait for Redis
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    try:
        for pause in (float(value) for value in args.pauses.split(",")):
            print(json.dumps(trial(pause, args.events, run.id)), flush=True)
    finally:
        services.run_delete(run_id=run.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
