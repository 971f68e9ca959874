"""The workloads. Each returns a flat dict of figures for one mode and repeat.

All of them run against one Daphne process of the mode under test, with the
load client in its own process and events produced by bench/producer.py
processes calling runs.services (the real write → commit → publish path).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from dataclasses import dataclass

from bench import stack
from bench.modes import Mode


@dataclass
class Sizes:
    """How big each workload is: full (make bench), quick (make bench-quick) or smoke (the suite's test)."""

    l1_watchers: int
    l1_runs: int
    l1_rate: float
    l2_watchers: int
    l2_runs: int
    l2_rate: float
    duration: float  # seconds of events per latency workload
    burst_watchers: int
    burst_events: int
    idle_window: float  # seconds per DB-load / idle-CPU reading
    hold: int  # idle sockets for the connections workload
    hold_runs: int
    fanout_watchers: int
    fanout_runs: int
    fanout_rates: tuple[float, ...]
    fanout_step: float
    publish_n: int
    throughput_runs: int
    stats_settle: float  # seconds before an idle DB reading (see latency_workload)
    big_storm: int = 5000  # clients connecting at once in the second storm (issue 13)
    write_cost_runs: int = 150  # runs per repeat of bench/write_cost.py
    # Idle CPU of the held sockets is read over a whole access re-check period
    # (REALTIME_ACCESS_RECHECK_SECONDS, 60 s by default) and a little more, so
    # periodic per-socket work is always inside the window, never just after it.
    idle_cpu_window: float = 65.0
    pause_scale: float = 1.0  # the connections and fan-out workloads' fixed settling pauses, scaled


FULL = Sizes(
    100,
    10,
    20,
    1000,
    50,
    200,
    6.0,
    100,
    16,
    6.0,
    20_000,
    100,
    1000,
    10,
    (10, 20, 40, 80, 120, 160),
    4.0,
    300,
    150,
    11.0,
)
QUICK = Sizes(20, 4, 10, 100, 10, 40, 2.0, 20, 4, 2.5, 100, 10, 100, 4, (20,), 2.0, 50, 5, 1.0, 200, 10, 2.5)
# Every workload once, at the smallest sizes that still run each of its code paths
# (several runs and watchers, a burst, both storms, a held batch, a fan-out step,
# publishes, throughput, write cost): tests/bench/test_bench_quick.py, in every `make test`.
SMOKE = Sizes(
    4, 2, 10, 10, 2, 10, 0.5, 4, 2, 0.3, 20, 2, 4, 2, (20,), 0.5, 5, 2, 0.0, 20, 2,
    idle_cpu_window=0.3, pause_scale=0.1,
)  # fmt: skip

FANOUT_P99_MS = 250.0
HOLD_BATCH = 200  # sockets opened at a time when filling a process (the storm is measured apart)
HOLD_BUDGET_S = 120.0  # no new batch after this long: a slow connect path shows as fewer held


@dataclass
class Ctx:
    procs: stack.Processes
    env: dict[str, str]  # the bench's base environment
    client: stack.LoadClient
    token: str
    admin_dsn: str
    dbname: str
    sizes: Sizes
    fixtures: object  # bench.fixtures module (Django is set up in the orchestrator)
    # The most sockets one load-client process holds (0: as many as its descriptors
    # allow); the connections workload spreads its sockets over as many as it takes.
    client_sockets: int = 0


def mode_env(ctx: Ctx, mode: Mode) -> dict[str, str]:
    return {**ctx.env, **mode.env}


# --- helpers -------------------------------------------------------------------------


def produce(ctx: Ctx, mode: Mode, runs: list[str], rate: float, duration: float, finish: bool = True) -> dict:
    """Emit ``rate`` events/s over ``runs`` for ``duration`` s: one producer process per
    100 events/s, one writer thread per 10 events/s (a commit costs several ms here)."""
    count = max(1, min(len(runs), math.ceil(rate / 100)))
    threads = max(1, math.ceil(rate / count / 10))
    chunks = [runs[i::count] for i in range(count)]
    env = mode_env(ctx, mode)
    running = []
    for chunk in chunks:
        spec = {
            "runs": chunk,
            "rate": rate * len(chunk) / len(runs),  # the same rate for every run
            "duration": duration,
            "finish": finish,
            "threads": threads,
        }
        argv = [stack.PYTHON, str(stack.ROOT / "bench" / "producer.py"), json.dumps(spec)]
        running.append(subprocess.Popen(argv, cwd=stack.ROOT, env=env, stdout=subprocess.PIPE))
    results = []
    for proc in running:
        out, _ = proc.communicate(timeout=duration * 5 + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"producer exited with {proc.returncode}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    commits: dict = {}
    for r in results:
        commits.update(r["commits"])
    emitted = sum(r["emitted"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {
        "emitted": emitted,
        "rate": round(emitted / elapsed, 1),
        "worst_lag_ms": max(r["worst_lag_ms"] for r in results),
        "commits": commits,
    }


def finish(ctx: Ctx, mode: Mode, runs: list[str]) -> None:
    spec = {"runs": runs, "finish_only": True, "rate": 1, "duration": 0}
    argv = [stack.PYTHON, str(stack.ROOT / "bench" / "producer.py"), json.dumps(spec)]
    subprocess.run(
        argv, cwd=stack.ROOT, env=mode_env(ctx, mode), check=True, capture_output=True, timeout=300
    )


def queries_per_second(ctx: Ctx, window: float) -> float:
    before = stack.pg_transactions(ctx.admin_dsn, ctx.dbname)
    began = time.perf_counter()
    time.sleep(window)
    after = stack.pg_transactions(ctx.admin_dsn, ctx.dbname)
    return round((after - before) / (time.perf_counter() - began), 2)


def settle(ctx: Ctx, run_ids: list[str], prefix: str, out: dict, commits: dict | None = None) -> dict:
    """The client's tally against the runs' final seqs; the watchers' detail when any was lost."""
    expected = ctx.fixtures.final_seqs(run_ids)
    stats = ctx.client.call("stats", expected=expected, commits=commits)
    if stats["lost"] or stats["duplicates"]:
        detail = ctx.client.call("detail")
        bad = [row for row in detail["rows"] if row[1] != expected.get(row[0]) or row[3] or row[4]]
        out[f"{prefix}_trouble"] = {
            "expected": expected,
            "columns": detail["columns"],
            "rows": bad[:50],
            "stats": stats,
        }
    return stats


def drain_timeout(mode: Mode) -> float:
    return 10.0 if mode.push else 30.0


def latency_workload(
    ctx: Ctx,
    mode: Mode,
    port: int,
    *,
    watchers: int,
    runs: int,
    rate: float,
    duration: float,
    prefix: str,
    idle_window: float = 0.0,
) -> dict:
    """Open ``watchers`` sockets over ``runs`` runs, (optionally) read idle DB load,
    then stream events at ``rate`` and check every event arrived once."""
    began = time.perf_counter()
    run_ids = ctx.fixtures.make_runs(runs, steps=math.ceil(rate * duration / runs / 2) + 5)
    url = f"ws://127.0.0.1:{port}"
    opened = ctx.client.call(
        "open", url=url, token=ctx.token, runs=run_ids, per_run=watchers // runs, batch=250
    )
    out: dict = {}
    if idle_window:
        # A backend that goes idle reports its statistics up to 10 s later
        # (PostgreSQL's PGSTAT_IDLE_INTERVAL): let the connects' and the run
        # set-up's transactions land before the window opens, not inside it.
        time.sleep(ctx.sizes.stats_settle)
        out[f"idle_qps_{prefix}"] = queries_per_second(ctx, idle_window)
    ctx.client.call("reset")
    busy_before, total_before = stack.machine_cpu_seconds()
    produced = produce(ctx, mode, run_ids, rate, duration)
    busy_after, total_after = stack.machine_cpu_seconds()
    ctx.client.call("wait_closed", timeout=drain_timeout(mode))
    stats = settle(ctx, run_ids, prefix, out, produced["commits"])
    ctx.client.call("close")
    lat = stats["latency_ms"]
    out.update(
        {
            f"{prefix}_p50": lat["p50"],
            f"{prefix}_p95": lat["p95"],
            f"{prefix}_p99": lat["p99"],
            f"{prefix}_rate": produced["rate"],
            f"{prefix}_commit_p50": stats["delivery_ms"]["p50"],
            f"{prefix}_commit_p99": stats["delivery_ms"]["p99"],
            f"lost_{prefix}": stats["lost"],
            f"dups_{prefix}": stats["duplicates"],
            f"{prefix}_connected": opened["connected"],
            f"{prefix}_open_s": opened["elapsed_s"],
            f"{prefix}_phase_s": round(time.perf_counter() - began, 1),
            # how busy the cores were while the events were produced: where the machine is the limit
            f"{prefix}_machine_busy_pct": round(
                100 * (busy_after - busy_before) / (total_after - total_before), 1
            ),
        }
    )
    return out


# --- workloads -------------------------------------------------------------------------


def per_mode(ctx: Ctx, mode: Mode, *, with_fanout: bool) -> dict:
    """Latency (1), idle DB load (2), burst to one run, connect storm (6), fan-out (4) — one Daphne."""
    s = ctx.sizes
    procs = ctx.procs
    web, port = stack.start_web(procs, mode_env(ctx, mode), mode.asgi_app)
    try:
        ctx.client.call(
            "open",
            url=f"ws://127.0.0.1:{port}",
            token=ctx.token,
            runs=ctx.fixtures.make_runs(1, steps=1),
            per_run=2,
        )  # warm-up: imports, DB connection
        ctx.client.call("close")
        out = latency_workload(
            ctx,
            mode,
            port,
            watchers=s.l1_watchers,
            runs=s.l1_runs,
            rate=s.l1_rate,
            duration=s.duration,
            prefix="l1",
            idle_window=s.idle_window,
        )
        # One run, many watchers; events spaced out so each is its own burst.
        out.update(
            latency_workload(
                ctx,
                mode,
                port,
                watchers=s.burst_watchers,
                runs=1,
                rate=4.0,
                duration=s.burst_events / 4.0,
                prefix="burst",
            )
        )
        out.update(
            latency_workload(
                ctx,
                mode,
                port,
                watchers=s.l2_watchers,
                runs=s.l2_runs,
                rate=s.l2_rate,
                duration=s.duration,
                prefix="l2",
                idle_window=s.idle_window,
            )
        )
        if with_fanout:
            out.update(fanout(ctx, mode, port))
        out["daphne_rss_mb"] = round(sum(map(stack.rss_kb, stack.web_pids(web))) / 1024, 1)
        # Last: a collapsed storm leaves the process busy with dead handshakes for a while.
        out.update(storm(ctx, port))
        out.update(storm(ctx, port, clients=s.big_storm, prefix="storm_big"))
        return out
    finally:
        procs.stop(web)


def storm(ctx: Ctx, port: int, *, clients: int | None = None, prefix: str = "storm") -> dict:
    """(6) ``clients`` (default: as many as the 1,000-watcher workload) connecting at once."""
    s = ctx.sizes
    clients = clients or s.l2_watchers
    runs = s.l2_runs
    run_ids = ctx.fixtures.make_runs(runs, steps=1)
    opened = ctx.client.call(
        "open",
        url=f"ws://127.0.0.1:{port}",
        token=ctx.token,
        runs=run_ids,
        per_run=clients // runs,
        batch=clients,
    )
    ctx.client.call("close")
    return {
        f"{prefix}_connected": opened["connected"],
        f"{prefix}_all_s": opened["elapsed_s"],
        f"{prefix}_p99_ms": opened["connect_ms"]["p99"],
    }


def fanout(ctx: Ctx, mode: Mode, port: int) -> dict:
    """(4) Frames/s one Daphne delivers with p99 under 250 ms: raise the event rate step by step."""
    s = ctx.sizes
    run_ids = ctx.fixtures.make_runs(
        s.fanout_runs, steps=math.ceil(sum(s.fanout_rates) * s.fanout_step / s.fanout_runs / 2) + 5
    )
    ctx.client.call(
        "open",
        url=f"ws://127.0.0.1:{port}",
        token=ctx.token,
        runs=run_ids,
        per_run=s.fanout_watchers // s.fanout_runs,
        batch=250,
    )
    best = 0.0
    steps = []
    for rate in s.fanout_rates:
        ctx.client.call("reset")
        produced = produce(ctx, mode, run_ids, rate, s.fanout_step, finish=False)
        time.sleep(0.5 * s.pause_scale)
        stats = ctx.client.call("stats", commits=produced["commits"])
        frames_per_s = round(stats["frames"] / s.fanout_step, 1)
        p99 = stats["latency_ms"]["p99"]
        steps.append(
            {
                "rate": produced["rate"],
                "frames_per_s": frames_per_s,
                "p99_ms": p99,
                "after_commit_p99_ms": stats["delivery_ms"]["p99"],
            }
        )
        if p99 is None or p99 >= FANOUT_P99_MS:
            break
        best = max(best, frames_per_s)
    # Finished from a process with the mode's environment: it must publish on the
    # same channel layer as the Daphne under test.
    finish(ctx, mode, run_ids)
    ctx.client.call("wait_closed", timeout=drain_timeout(mode))
    out = {"fanout_frames_per_s": best, "fanout_steps": steps}
    stats = settle(ctx, run_ids, "fanout", out)
    ctx.client.call("close")
    out.update({"lost_fanout": stats["lost"], "dups_fanout": stats["duplicates"]})
    return out


def socket_shares(per_run: int, runs: int, most: int) -> list[int]:
    """Sockets per run for each load-client process, so that each holds at most ``most``
    sockets and together they hold ``per_run`` on each of ``runs`` runs."""
    fits = max(1, most // runs)  # per run, in one process
    count = math.ceil(per_run / fits)
    return [per_run // count + (1 if i < per_run % count else 0) for i in range(count)]


def connections(ctx: Ctx, mode: Mode) -> dict:
    """(3) Idle WebSockets the web processes hold, RSS per connection, idle CPU.

    One process's descriptors (its hard RLIMIT_NOFILE, which an unprivileged user
    cannot raise) bound the sockets a load client holds, so past that the sockets
    are spread over several load-client processes, opening side by side with
    ``HOLD_BATCH`` in flight between them: the server sees the same load as from one."""
    s = ctx.sizes
    most = min(ctx.client_sockets or ctx.client.max_sockets, ctx.client.max_sockets)
    shares = socket_shares(s.hold // s.hold_runs, s.hold_runs, most)
    web, port = stack.start_web(ctx.procs, mode_env(ctx, mode), mode.asgi_app)
    pids = stack.web_pids(web)
    extra: list[stack.LoadClient] = []
    try:
        extra = [stack.LoadClient(ctx.procs, ctx.env, f"client-{i}") for i in range(1, len(shares))]
        clients = [ctx.client, *extra]
        run_ids = ctx.fixtures.make_runs(s.hold_runs, steps=1)
        url = f"ws://127.0.0.1:{port}"
        # Warm caches and pools first.
        ctx.client.call("open", url=url, token=ctx.token, runs=run_ids[:1], per_run=20)
        ctx.client.call("close")
        time.sleep(1.0 * s.pause_scale)
        base = sum(map(stack.rss_kb, pids))
        tx_before = stack.pg_transactions(ctx.admin_dsn, ctx.dbname)
        began = time.perf_counter()
        batch = max(1, HOLD_BATCH // len(clients))
        each = {"url": url, "token": ctx.token, "runs": run_ids, "batch": batch, "budget_s": HOLD_BUDGET_S}
        opened = stack.call_all(clients, "open", [{**each, "per_run": share} for share in shares])
        open_s = time.perf_counter() - began
        connected = sum(o["connected"] for o in opened)
        time.sleep(2.0 * s.pause_scale)
        tx_per_connect = (stack.pg_transactions(ctx.admin_dsn, ctx.dbname) - tx_before) / max(1, connected)
        cpu = stack.cpu_percent(pids, s.idle_cpu_window)
        held = sum(stats["open"] for stats in stack.call_all(clients, "stats"))
        after = sum(map(stack.rss_kb, pids))
        stack.call_all(clients, "close")
        return {
            "held": held,
            "hold_tried": sum(o["opened"] for o in opened),
            "load_clients": len(clients),
            "kb_per_conn": round((after - base) / held, 1) if held else None,
            "idle_cpu_pct": cpu,
            "connects_per_s": round(connected / open_s, 1),
            "db_tx_per_connect": round(tx_per_connect, 2),
        }
    finally:
        for client in extra:
            client.exit()
        ctx.procs.stop(web)


def publish_cost(ctx: Ctx, layer: str) -> dict:
    """(5a) ms per publish from a synchronous process, ours against the tutorial's."""
    env = {**ctx.env, "REALTIME_MODE": "push", "REALTIME_CHANNEL_LAYER": layer}
    argv = [
        stack.PYTHON,
        str(stack.ROOT / "bench" / "publish_cost.py"),
        json.dumps({"n": ctx.sizes.publish_n}),
    ]
    done = subprocess.run(
        argv, cwd=stack.ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "publish_p50_ms": got["ours_publish"]["p50"],
        "publish_p99_ms": got["ours_publish"]["p99"],
        "tutorial_p50_ms": got["tutorial"]["p50"],
        "tutorial_p99_ms": got["tutorial"]["p99"],
    }


def throughput(ctx: Ctx, workers: int) -> dict:
    """(5b) Whole runs (3 echo steps) completed per second by ``workers`` Celery workers."""
    env = {**ctx.env, "REALTIME_MODE": "push", "REALTIME_CHANNEL_LAYER": "pubsub"}
    started = [stack.start_worker(ctx.procs, env, f"w{i}") for i in range(workers)]
    try:
        ctx.fixtures.wait_done(ctx.fixtures.create_runs(workers * 2), timeout=60)  # workers are up
        workers_before = sum(stack.cpu_seconds(proc.pid) for proc in started)
        processes_before = stack.cpu_by_process()
        busy_before, total_before = stack.machine_cpu_seconds()
        began = time.perf_counter()
        ids = ctx.fixtures.create_runs(ctx.sizes.throughput_runs)
        done = ctx.fixtures.wait_done(ids, timeout=300)
        elapsed = time.perf_counter() - began
        busy_after, total_after = stack.machine_cpu_seconds()
        processes_after = stack.cpu_by_process()
        workers_cpu = sum(stack.cpu_seconds(proc.pid) for proc in started) - workers_before
        worker_pids, bench_pid = {proc.pid for proc in started}, os.getpid()

        def group(pid: int, comm: str) -> str:
            if pid in worker_pids:
                return "workers"
            if pid == bench_pid:
                return "bench"  # creating the runs and waiting for them
            return {"postgres": "postgres", "redis-server": "redis"}.get(comm, "other")

        spent = stack.cpu_spent_by(processes_before, processes_after, group)
        # What a run costs the whole machine (workers, PostgreSQL, Redis, this bench's own
        # creating and waiting) and how busy the cores were: where the cores are the limit.
        return {
            f"runs_per_s_{workers}w": round(done / elapsed, 2),
            f"machine_busy_pct_{workers}w": round(
                100 * (busy_after - busy_before) / (total_after - total_before), 1
            ),
            f"machine_cpu_ms_per_run_{workers}w": round(1000 * (busy_after - busy_before) / max(done, 1), 2),
            f"worker_cpu_ms_per_run_{workers}w": round(1000 * workers_cpu / max(done, 1), 2),
            # the same by process (those alive through the window): who the machine's CPU went to
            **{
                f"cpu_ms_per_run_{workers}w_{name}": round(1000 * seconds / max(done, 1), 2)
                for name, seconds in spent.items()
            },
        }
    finally:
        for proc in started:
            ctx.procs.stop(proc)


def write_cost(ctx: Ctx) -> dict:
    """(5c) Worker CPU per event, in CPU time: bench/write_cost.py (its own database and Redis)."""
    argv = [stack.PYTHON, str(stack.ROOT / "bench" / "write_cost.py")]
    argv += ["--runs", str(ctx.sizes.write_cost_runs), "--repeats", "1"]
    done = subprocess.run(
        argv, cwd=stack.ROOT, env=ctx.env, capture_output=True, text=True, timeout=600, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    got.pop("median_of", None)
    return got
