"""Medians, the goals of issue 6, the table, and docs/benchmarks.md."""

from __future__ import annotations

import statistics
from typing import Any

from bench.modes import MODES

# The machine block's key for the web command's process count (bench/run.py writes it).
WEB_PROCESSES = "web processes (Daphne, WEB_CONCURRENCY)"

DEFAULT_MODE = "push-pubsub"  # settings' default: REALTIME_MODE=push, REALTIME_CHANNEL_LAYER=pubsub

# (key, label) rows of the per-mode table.
ROWS = [
    ("l1_p50", "latency p50 ms — 100 watchers / 10 runs / 20 ev/s"),
    ("l1_p95", "latency p95 ms — same"),
    ("l1_p99", "latency p99 ms — same"),
    ("l1_commit_p50", "… p50 ms from the commit's end (ts is stamped before the commit)"),
    ("l1_commit_p99", "… p99 ms from the commit's end"),
    ("burst_p99", "latency p99 ms — one event to 100 watchers of one run"),
    ("burst_commit_p99", "… p99 ms from the commit's end"),
    ("l2_p50", "latency p50 ms — 1,000 watchers / 50 runs / 200 ev/s"),
    ("l2_p95", "latency p95 ms — same"),
    ("l2_p99", "latency p99 ms — same"),
    ("l2_commit_p50", "… p50 ms from the commit's end"),
    ("l2_commit_p99", "… p99 ms from the commit's end"),
    ("l2_rate", "events/s actually produced in that workload"),
    ("lost", "events lost (all workloads, all repeats)"),
    ("dups", "duplicate frames (all workloads, all repeats)"),
    ("idle_qps_l1", "DB transactions/s, 100 idle watchers (on 10 runs)"),
    ("idle_qps_l2", "DB transactions/s, 1,000 idle watchers (on 50 runs)"),
    ("storm_connected", "of 1,000 clients connecting at once: got `connected`"),
    ("storm_all_s", "… all of them within (s)"),
    ("storm_big_connected", "of 5,000 clients connecting at once: got `connected`"),
    ("storm_big_all_s", "… all of them within (s)"),
    ("held", "idle WebSockets held by the web processes"),
    ("kb_per_conn", "RSS per idle WebSocket (KB)"),
    ("idle_cpu_pct", "web processes' CPU while they idle (% of a core)"),
    ("connects_per_s", "connects/s while opening them (200 at a time)"),
    ("db_tx_per_connect", "DB transactions per connect"),
    ("fanout_frames_per_s", "fan-out: frames/s delivered with p99 < 250 ms"),
]


def median_of(repeats: list[dict]) -> dict[str, Any]:
    """Median of each numeric figure across repeats; lost/dups are summed."""
    keys = {key for r in repeats for key, value in r.items() if isinstance(value, int | float)}
    out: dict[str, Any] = {}
    for key in sorted(keys):
        values = [r[key] for r in repeats if isinstance(r.get(key), int | float)]
        if key.startswith(("lost", "dups")):
            out[key] = sum(values)
        else:
            out[key] = round(statistics.median(values), 2)
    out["lost"] = sum(v for k, v in out.items() if k.startswith("lost_"))
    out["dups"] = sum(v for k, v in out.items() if k.startswith("dups_"))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def mode_table(results: dict) -> str:
    modes = results["modes"]
    head = "| figure | " + " | ".join(m.label for m in MODES) + " |"
    lines = [head, "|---|" + "---:|" * len(MODES)]
    for key, label in ROWS:
        cells = []
        for mode in MODES:
            entry = modes.get(mode.key, {})
            if entry.get("reason"):
                cells.append("n/a")
            else:
                cells.append(_fmt(entry.get("median", {}).get(key)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    missing = [
        f"- {m.label}: **not available** — {modes[m.key]['reason']}"
        for m in MODES
        if modes.get(m.key, {}).get("reason")
    ]
    return "\n".join(lines + (["", *missing] if missing else []))


def other_table(results: dict) -> str:
    lines = ["| figure | value |", "|---|---:|"]
    for layer, got in results.get("publish", {}).items():
        lines.append(
            f"| publish p50 / p99 ms, ours (long-lived loop), {layer} | "
            f"{_fmt(got['publish_p50_ms'])} / {_fmt(got['publish_p99_ms'])} |"
        )
        lines.append(
            f"| publish p50 / p99 ms, tutorial async_to_sync(group_send), {layer} | "
            f"{_fmt(got['tutorial_p50_ms'])} / {_fmt(got['tutorial_p99_ms'])} |"
        )
    throughput = results.get("throughput", {})
    for key, value in sorted(throughput.items()):
        if not key.startswith("runs_per_s_"):
            continue
        workers = key.rsplit("_", 1)[-1]
        lines.append(f"| whole runs/s (3 echo steps), {workers.replace('w', ' worker(s)')} | {_fmt(value)} |")
        if f"machine_cpu_ms_per_run_{workers}" in throughput:  # runs before 2026-12-06 lack these
            lines.append(
                f"| … CPU per run, the whole machine / the workers (ms); the cores busy | "
                f"{_fmt(throughput[f'machine_cpu_ms_per_run_{workers}'])} / "
                f"{_fmt(throughput[f'worker_cpu_ms_per_run_{workers}'])}; "
                f"{_fmt(throughput[f'machine_busy_pct_{workers}'])} % |"
            )
    return "\n".join(lines)


def goals(results: dict) -> list[dict]:
    """Issue 6's goals, each met / not met with the figure, on the default mode."""
    d = results["modes"].get(DEFAULT_MODE, {}).get("median", {})
    poll = results["modes"].get("poll", {}).get("median", {})
    legacy = results["modes"].get("legacy", {}).get("median", {})
    pub = results.get("publish", {}).get("pubsub", {})
    tick = 1 / float(results.get("poll_interval", 2.0))
    # Each web process polls for its own watchers: the limit is one query per tick per process.
    # (Runs before the web command had one process and did not record the count.)
    processes = int(results.get("machine", {}).get(WEB_PROCESSES, 1))

    def goal(text: str, ok: bool | None, figure: str) -> dict:
        return {"goal": text, "met": ok, "figure": figure}

    def le(value, limit) -> bool | None:
        return None if value is None else value <= limit

    lost_all = sum(m.get("median", {}).get("lost", 0) for m in results["modes"].values())
    rows = [
        goal(
            "Push: p50 ≤ 5 ms and p99 ≤ 25 ms at 100 watchers / 10 runs / 20 ev/s",
            None if d.get("l1_p50") is None else (d["l1_p50"] <= 5 and d["l1_p99"] <= 25),
            f"p50 {_fmt(d.get('l1_p50'))} ms, p99 {_fmt(d.get('l1_p99'))} ms",
        ),
        goal(
            "Push: one event to 100 watchers of one run, p99 ≤ 50 ms",
            le(d.get("burst_p99"), 50),
            f"p99 {_fmt(d.get('burst_p99'))} ms",
        ),
        goal(
            "Push: p99 ≤ 100 ms at 1,000 watchers / 50 runs / 200 ev/s",
            le(d.get("l2_p99"), 100),
            f"p99 {_fmt(d.get('l2_p99'))} ms at {_fmt(d.get('l2_rate'))} ev/s",
        ),
        goal(
            "0 events lost anywhere", lost_all == 0, f"{lost_all} lost over all modes, workloads and repeats"
        ),
        goal(
            "Publish ≤ 1 ms p50 per event from a worker",
            le(pub.get("publish_p50_ms"), 1.0),
            f"{_fmt(pub.get('publish_p50_ms'))} ms (tutorial pattern {_fmt(pub.get('tutorial_p50_ms'))} ms)",
        ),
        goal(
            "1,000 clients connecting at once all get `connected` within 2 s",
            None
            if d.get("storm_connected") is None
            else (d["storm_connected"] >= 1000 and d["storm_all_s"] <= 2.0),
            f"{_fmt(d.get('storm_connected'))} connected, all within {_fmt(d.get('storm_all_s'))} s",
        ),
        goal(
            "One web process holds ≥ 10,000 idle WebSockets at ≤ 35 KB each (and its idle CPU)",
            None if d.get("held") is None else (d["held"] >= 10_000 and d["kb_per_conn"] <= 35),
            f"{_fmt(d.get('held'))} held, {_fmt(d.get('kb_per_conn'))} KB each, "
            f"idle CPU {_fmt(d.get('idle_cpu_pct'))} % of a core",
        ),
        goal(
            "Push: 0 database queries per second while idle",
            None if d.get("idle_qps_l2") is None else max(d["idle_qps_l1"], d["idle_qps_l2"]) < 0.05,
            f"{_fmt(d.get('idle_qps_l1'))} transactions/s (100 watchers), "
            f"{_fmt(d.get('idle_qps_l2'))} (1,000)",
        ),
        goal(
            "Multiplexed polling: at most one query per tick per process, whatever the connections "
            "(a tick is one transaction: the poll query)",
            None
            if poll.get("idle_qps_l2") is None
            else max(poll["idle_qps_l1"], poll["idle_qps_l2"]) <= tick * processes * 1.2,
            f"{_fmt(poll.get('idle_qps_l1'))} transactions/s with 100 watchers, "
            f"{_fmt(poll.get('idle_qps_l2'))} with 1,000, over {processes} web process(es); "
            f"ticks every {1 / tick:g} s "
            f"(old design: {_fmt(legacy.get('idle_qps_l1'))} and {_fmt(legacy.get('idle_qps_l2'))})",
        ),
    ]
    return rows


def goals_markdown(rows: list[dict]) -> str:
    mark = {True: "**met**", False: "**not met**", None: "not measured"}
    return "\n".join(f"- {mark[r['met']]} — {r['goal']}: {r['figure']}" for r in rows)


def machine_markdown(machine: dict) -> str:
    return " · ".join(f"{key}: {value}" for key, value in machine.items())


def goals_24_markdown(results: dict) -> str:
    """Issue 24's table: each goal, the figure it was filed with, this run's, met or not."""
    d = results["modes"].get(DEFAULT_MODE, {}).get("median", {})
    work = results.get("write_cost", {})
    runs = results.get("throughput", {})

    def ok(value: bool | None) -> str:
        return {True: "met", False: "**not met**", None: "not measured"}[value]

    def judged(*values, test) -> bool | None:
        return None if any(v is None for v in values) else test()

    rows = [
        (
            "1,000 clients connecting at once: all `connected` within",
            "≤ 1 s",
            "1.36 s",
            f"{_fmt(d.get('storm_all_s'))} s ({_fmt(d.get('storm_connected'))} connected)",
            judged(d.get("storm_all_s"), test=lambda: d["storm_connected"] >= 1000 and d["storm_all_s"] <= 1),
        ),
        (
            "5,000 clients connecting at once",
            "all connected, ≤ 5 s",
            "7.7 s",
            f"{_fmt(d.get('storm_big_connected'))} connected, all within {_fmt(d.get('storm_big_all_s'))} s",
            judged(
                d.get("storm_big_all_s"),
                test=lambda: d["storm_big_connected"] >= 5000 and d["storm_big_all_s"] <= 5,
            ),
        ),
        (
            "push p50 / p99, 100 watchers / 10 runs / 20 ev/s",
            "≤ 3 / ≤ 15 ms",
            "4.70 / 33.9 ms",
            f"{_fmt(d.get('l1_p50'))} / {_fmt(d.get('l1_p99'))} ms",
            judged(d.get("l1_p50"), test=lambda: d["l1_p50"] <= 3 and d["l1_p99"] <= 15),
        ),
        (
            "one event to 100 watchers of one run, p99",
            "≤ 25 ms",
            "29.9 ms",
            f"{_fmt(d.get('burst_p99'))} ms",
            judged(d.get("burst_p99"), test=lambda: d["burst_p99"] <= 25),
        ),
        (
            "1,000 watchers / 50 runs / 200 ev/s, p99 (producers on the same box)",
            "≤ 100 ms at the full 200 ev/s",
            "408 ms at 198 ev/s",
            f"{_fmt(d.get('l2_p99'))} ms at {_fmt(d.get('l2_rate'))} ev/s",
            judged(d.get("l2_p99"), test=lambda: d["l2_p99"] <= 100 and d["l2_rate"] >= 195),
        ),
        (
            "fan-out: frames/s delivered with p99 < 250 ms",
            "≥ 10,000",
            "8,000",
            _fmt(d.get("fanout_frames_per_s")),
            judged(d.get("fanout_frames_per_s"), test=lambda: d["fanout_frames_per_s"] >= 10_000),
        ),
        (
            "idle sockets per host",
            "≥ 20,000 at ≤ 25 KB each, idle CPU ≤ 10 % of a core per 10,000",
            "20,000 at 23.9 KB, 8.9 % per 10,000",
            f"{_fmt(d.get('held'))} at {_fmt(d.get('kb_per_conn'))} KB, "
            f"idle CPU {_fmt(d.get('idle_cpu_pct'))} % of a core",
            judged(
                d.get("held"),
                test=lambda: (
                    d["held"] >= 20_000
                    and d["kb_per_conn"] <= 25
                    and d["idle_cpu_pct"] <= 10 * d["held"] / 10_000
                ),
            ),
        ),
        (
            "worker CPU per event (services → commit → publish), CPU time",
            "≤ 1.5 ms",
            "4.18 ms",
            f"{_fmt(work.get('worker_cpu_ms_per_event'))} ms",
            judged(work.get("worker_cpu_ms_per_event"), test=lambda: work["worker_cpu_ms_per_event"] <= 1.5),
        ),
        (
            "whole runs/s, 3 echo steps, 2 workers",
            "≥ 50",
            "26.5",
            _fmt(runs.get("runs_per_s_2w")),
            judged(runs.get("runs_per_s_2w"), test=lambda: runs["runs_per_s_2w"] >= 50),
        ),
    ]
    lines = ["| figure | goal | when filed (2026-12-01) | this run | |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {e} | {ok(m)} |" for a, b, c, e, m in rows]
    return "\n".join(lines)
