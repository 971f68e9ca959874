"""The soak: runs flowing and clients churning against the real stack for SOAK_SECONDS; memory over time.

Not in CI (skipped unless SOAK_SECONDS is set); `make chaos` runs it for 600 s.
A Daphne and a Celery worker of the test's own; runs created over HTTP, each
watched by a fresh WebSocket to its `run_completed` and 1000, a list-stream
socket opened and closed each round. RSS of the web and worker processes
(main and pool) is sampled every SOAK_SAMPLE_SECONDS; the web process traces its
allocations (server/memory_trace.py) and dumps a snapshot after warm-up and at
the end. The slope after warm-up (KiB/min, least squares), the samples and the
top allocation growth go to SOAK_REPORT (default soak-report.txt in the temp dir).
"""

import asyncio
import json
import os
import signal
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.processes import celery_worker, daphne_server, subprocess_env
from tests.waiting import wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "0") or 0)
SAMPLE_SECONDS = float(os.environ.get("SOAK_SAMPLE_SECONDS", "10"))
WARM_UP_SHARE = 0.2  # the first fifth is warm-up: caches, pools, the allocator's arenas filling
CLIENTS = 4  # runs in flight at once, each with its own watcher
WAIT = 60.0

pytestmark = [
    pytest.mark.skipif(not SOAK_SECONDS, reason="the soak runs under `make chaos` (SOAK_SECONDS)"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(pid)


def slope_kib_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB), in KiB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60 if var else 0.0


def create_run(server, token: str, n: int) -> str:
    body = json.dumps(
        {"prompt": f"soak {n}", "steps": [{"tool": "echo", "args": {"n": i}} for i in range(3)]}
    )
    request = urllib.request.Request(
        f"{server.url}/api/runs/",
        data=body.encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return json.loads(response.read())["id"]


async def watch_to_the_end(server, token: str, run_id: str) -> str:
    headers = {"Authorization": f"Token {token}"}
    async with connect(
        f"{server.ws_url}/ws/runs/{run_id}/", additional_headers=headers, open_timeout=WAIT
    ) as ws:
        last = None
        async with asyncio.timeout(WAIT):
            async for text in ws:
                last = json.loads(text)
        assert ws.close_code == 1000, ws.close_code
        return (
            last["payload"].get("status")
            if last["type"] == "run_completed"
            else last["payload"]["run"]["status"]
        )


async def glance_at_the_list(server, token: str) -> None:
    headers = {"Authorization": f"Token {token}"}
    async with connect(f"{server.ws_url}/ws/runs/", additional_headers=headers, open_timeout=WAIT) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.send('{"type": "ping"}')


def test_memory_stays_flat_under_runs_and_client_churn(token):
    trace_dir = Path(tempfile.mkdtemp(prefix="quikday-soak-"))
    report_path = Path(os.environ.get("SOAK_REPORT") or trace_dir / "soak-report.txt")
    env = subprocess_env(QUIKDAY_TRACEMALLOC_DIR=str(trace_dir))
    web_samples: list[tuple[float, int]] = []
    worker_samples: list[tuple[float, int]] = []
    outcomes: dict[str, int] = {}
    with daphne_server(env=env) as web, celery_worker(env=subprocess_env(), concurrency=2) as worker:

        def worker_rss() -> int:
            return sum(rss_kib(pid) for pid in [worker.pid, *worker.child_pids()])

        async def soak() -> None:
            started = time.monotonic()
            warm_up_dumped = False
            next_sample = started
            n = 0
            while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
                if time.monotonic() >= next_sample:
                    web_samples.append((elapsed, rss_kib(web.pid)))
                    worker_samples.append((elapsed, worker_rss()))
                    next_sample += SAMPLE_SECONDS
                if not warm_up_dumped and elapsed >= SOAK_SECONDS * WARM_UP_SHARE:
                    os.kill(web.pid, signal.SIGUSR2)
                    warm_up_dumped = True
                run_ids = [await asyncio.to_thread(create_run, web, token, n + i) for i in range(CLIENTS)]
                n += CLIENTS
                statuses = await asyncio.gather(
                    *(watch_to_the_end(web, token, run_id) for run_id in run_ids),
                    glance_at_the_list(web, token),
                )
                for status in statuses[:-1]:
                    outcomes[status] = outcomes.get(status, 0) + 1
            web_samples.append((time.monotonic() - started, rss_kib(web.pid)))
            worker_samples.append((time.monotonic() - started, worker_rss()))
            os.kill(web.pid, signal.SIGUSR2)

        asyncio.run(soak())
        dumps = wait_for(
            lambda: (
                sorted(trace_dir.glob(f"{web.pid}-*.tracemalloc"), key=lambda p: int(p.stem.split("-")[1]))
                if len(list(trace_dir.glob(f"{web.pid}-*.tracemalloc"))) >= 2
                else None
            ),
            what="the web process's two tracemalloc snapshots",
        )
    # From the first sample after the warm-up snapshot: taking it costs the web process some MB itself.
    warm = SOAK_SECONDS * WARM_UP_SHARE + SAMPLE_SECONDS
    web_slope = slope_kib_per_minute([s for s in web_samples if s[0] >= warm])
    worker_slope = slope_kib_per_minute([s for s in worker_samples if s[0] >= warm])
    first, last = (tracemalloc.Snapshot.load(str(path)) for path in (dumps[0], dumps[-1]))
    growth = last.compare_to(first, "lineno")[:15]
    lines = [
        f"soak: {SOAK_SECONDS:g} s, {sum(outcomes.values())} runs {outcomes}, {CLIENTS} watchers at a time "
        "plus a list stream per round (web process under tracemalloc)",
        f"web RSS: {web_samples[0][1]} -> {web_samples[-1][1]} KiB; "
        f"slope after warm-up {web_slope:+.1f} KiB/min",
        f"worker RSS (main + pool): {worker_samples[0][1]} -> {worker_samples[-1][1]} KiB; "
        f"slope after warm-up {worker_slope:+.1f} KiB/min",
        "web samples (s, KiB): " + ", ".join(f"({t:.0f}, {v})" for t, v in web_samples),
        "worker samples (s, KiB): " + ", ".join(f"({t:.0f}, {v})" for t, v in worker_samples),
        "tracemalloc, web process, growth from warm-up to the end (top 15):",
        *(f"  {stat}" for stat in growth),
    ]
    report_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {report_path}")
    assert set(outcomes) == {"succeeded"}, outcomes
    # Flat, with room for the allocator's noise: a leak of a frame per run shows well above it.
    assert web_slope < 200, web_slope
    assert worker_slope < 500, worker_slope
