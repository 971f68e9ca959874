"""The benchmark harness as a smoke test: `bench/run.py --smoke` runs end to end.

Starts the real stack (Daphne, a Celery worker, the load client, producers)
against PostgreSQL and Redis, and checks that it completes, writes its JSON,
and that no event was lost. No timing is asserted: timings belong to the bench.
Two modes keep it cheap: push on the default layer, and multiplexed polling;
``--smoke`` runs each workload once at the smallest sizes that still exercise
its code (`make bench-quick`'s larger ones are for a person's look at the figures).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def run_quick_bench(tmp_path: Path, *args: str) -> None:
    """``bench/run.py --smoke *args``, its JSON and logs in ``tmp_path``; its output if it fails."""
    env = dict(os.environ)
    # The bench makes its own database (<test db>_bench) and never touches the suite's.
    env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + _bench_db(env["DATABASE_URL"])
    argv = [
        sys.executable,
        "bench/run.py",
        "--smoke",
        *args,
        "--out",
        str(tmp_path),
        "--logs",
        str(tmp_path / "logs"),
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_quick_bench_completes_and_loses_nothing(tmp_path):
    run_quick_bench(tmp_path, "--modes", "push-pubsub,poll")
    written = list(tmp_path.glob("*-quick.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    assert results["quick"] is True and results["smoke"] is True
    for key in ("push-pubsub", "poll"):
        mode = results["modes"][key]
        assert mode["reason"] is None, mode["reason"]
        figures = mode["median"]
        assert figures["lost"] == 0
        assert figures["dups"] == 0
        assert figures["l1_connected"] > 0
        assert figures["l1_p50"] is not None
    assert {g["goal"] for g in results["goals"]}
    assert "publish" in results and "throughput" in results
    # What a run costs the whole machine: the figure docs/scaling.md divides the cores by.
    throughput = results["throughput"]
    assert throughput["runs_per_s_1w"] > 0
    assert 0 < throughput["machine_busy_pct_1w"] <= 100
    assert 0 < throughput["worker_cpu_ms_per_run_1w"] < throughput["machine_cpu_ms_per_run_1w"]
    assert throughput["cpu_ms_per_run_1w_workers"] > 0
    # a smoke run is a few runs: a process's share may round to 0 clock ticks, but each is told
    assert throughput["cpu_ms_per_run_1w_postgres"] >= 0 and throughput["cpu_ms_per_run_1w_bench"] >= 0
    assert 0 < results["modes"]["push-pubsub"]["median"]["l1_machine_busy_pct"] <= 100


def _bench_db(url: str) -> str:
    # Per xdist worker (quikday_bench_gw1): two workers' bench runs would drop each other's.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return url.rsplit("/", 1)[1].split("?")[0] + "_bench" + (f"_{worker}" if worker else "")
