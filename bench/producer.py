"""Event producer: drives runs through their transitions at a set rate.

A worker-like synchronous Django process that calls runs.services directly
(step_start / step_succeed alternately on each run, round robin), so every
event goes through the real path: signal → append under the run's row lock →
commit → publish from the process's long-lived publisher loop. At the end it
finishes each run (run_completed), which makes the server close the watchers'
sockets with 1000 — the client's signal that a run is over.

Usage (from bench/run.py): python bench/producer.py '<json spec>'
  spec = {"runs": [...], "rate": events/s, "duration": s, "finish": true, "threads": 4}
Prints one JSON line: events emitted, elapsed, how far behind schedule it fell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _where(steps: list) -> list:
    if steps and steps[-1].status == "running":
        return [steps[-1].index, True]
    return [len(steps), False]


def drive(runs: list[str], rate: float, duration: float, finish: bool) -> dict:
    """One thread's share: its runs, round robin, at ``rate`` events/s on a fixed schedule."""
    from django.db import connection

    from runs import selectors, services

    total = int(rate * duration)
    # Next step index and whether it is running, from where each run stands:
    # a workload may drive runs an earlier one left half way (fan-out steps).
    state = {run_id: _where(selectors.run_steps(run_id=run_id)) for run_id in runs}
    worst_lag = 0.0
    began = time.perf_counter()
    try:
        for k in range(total):
            lag = time.perf_counter() - (began + k / rate)
            if lag < 0:
                time.sleep(-lag)
            else:
                worst_lag = max(worst_lag, lag)
            run_id = runs[k % len(runs)]
            index, running = state[run_id]
            if running:
                services.step_succeed(run_id=run_id, index=index, output={"i": index})
                state[run_id] = [index + 1, False]
            else:
                services.step_start(run_id=run_id, index=index)
                state[run_id] = [index, True]
        elapsed = time.perf_counter() - began
        if finish:
            for run_id, (index, running) in state.items():
                if running:
                    services.step_succeed(run_id=run_id, index=index, output={"i": index})
                services.run_succeed(run_id=run_id, output=None)
    finally:
        connection.close()
    return {"emitted": total, "elapsed": elapsed, "worst_lag": worst_lag}


def main(spec: dict) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")
    django.setup()
    from realtime.events import publisher

    # As a Celery worker process does when it starts (realtime.signals): the
    # first event must not wait for the publisher's Redis connection.
    publisher.connect_publisher()
    commits = _record_commit_times()
    runs = spec["runs"]
    if spec.get("finish_only"):
        _finish(runs)
        return {"emitted": 0, "elapsed_s": 0.0, "rate": None, "worst_lag_ms": 0.0, "commits": commits}
    # Each event is one transaction whose commit waits for the WAL flush, so
    # one writer alone can't keep up with a high rate: split the runs over
    # threads (each with its own connection), as several workers would be.
    threads = max(1, min(len(runs), int(spec.get("threads", 1))))
    shares = [runs[i::threads] for i in range(threads)]
    # Every run gets the same rate: a thread's rate is its share of the runs.
    per_run = float(spec["rate"]) / len(runs)
    with ThreadPoolExecutor(threads) as pool:
        done = list(
            pool.map(
                lambda share: drive(
                    share, per_run * len(share), float(spec["duration"]), spec.get("finish", True)
                ),
                shares,
            )
        )
    emitted = sum(d["emitted"] for d in done)
    elapsed = max(d["elapsed"] for d in done)
    return {
        "emitted": emitted,
        "elapsed_s": round(elapsed, 3),
        "rate": round(emitted / elapsed, 1) if elapsed else None,
        "worst_lag_ms": round(max(d["worst_lag"] for d in done) * 1000, 1),
        "commits": commits,
    }


def _finish(runs: list[str]) -> None:
    """Succeed each run's running step, then the run (run_completed closes its sockets)."""
    from runs import services
    from runs.models import Step, StepStatus

    for run_id in runs:
        for step in Step.objects.filter(run_id=run_id, status=StepStatus.RUNNING):
            services.step_succeed(run_id=run_id, index=step.index, output=None)
        services.run_succeed(run_id=run_id, output=None)


def _record_commit_times() -> dict[str, dict[int, float]]:
    """Note when each event's transaction had committed: the moment its
    on-commit publish starts. (The frame's ``ts`` is stamped inside the
    transaction, before the commit's WAL flush, so the bench reports both.)"""
    from realtime.events import publisher

    commits: dict[str, dict[int, float]] = {}
    publish = publisher.publish

    def timed_publish(event, **kwargs):
        commits.setdefault(str(event.run_id), {})[event.seq] = time.time()
        return publish(event, **kwargs)

    publisher.publish = timed_publish  # realtime.events.log looks publish up at commit time
    return commits


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
