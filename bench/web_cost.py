"""What a web process spends per connect and per frame, in CPU time, per event loop.

Starts one Daphne process (``--loop asyncio``: plain ``daphne``; ``uvloop``:
server/daphne_uvloop.py, as the web command does), connects ``--watchers``
WebSocket clients (token auth) over ``--runs`` runs, ``--batch`` (100) at a time, then
drives every run through ``--steps`` steps from this process (runs.services,
publishing on REDIS_URL) and reads every frame. Reported, from
``/proc/<pid>/stat`` of the Daphne process: its CPU per connect (handshake,
auth, snapshot read, `connected`) and per frame delivered (receive from the
layer, hub, socket write). CPU time: other processes on a busy machine are
not charged to it.

``--gc default,20000:20:20`` gives each trial (uvloop) the collector's
thresholds and reports its collections: how many and their pauses
(bench/gc_probe.py).

``--metrics on,off,on,off`` gives each trial (paired with ``--loops`` in turn)
METRICS_ENABLED on or off: what the metrics and per-process stats cost per
connect and per frame, taken side by side.

Usage: python bench/web_cost.py [--loops asyncio,uvloop,asyncio,uvloop] [--metrics on] [--watchers 400]
  (DATABASE_URL's server, in bench/write_cost.py's database; REDIS_URL's Redis.)
One JSON line per trial.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pause_figures(path: Path) -> dict:
    """Each generation's collections after start-up: how many, their total and longest pause (ms)."""
    pauses = json.loads(path.read_text())
    return {
        f"gc{gen}": {
            "n": len(values),
            "total_ms": round(sum(values) * 1000, 1),
            "max_ms": round(max(values, default=0.0) * 1000, 2),
        }
        for gen, values in pauses.items()
    }


async def trial(
    loop: str,
    *,
    metrics: str,
    gc_threshold: str | None,
    watchers: int,
    runs: int,
    steps: int,
    idle: float,
    batch: int = 100,
    user,
    token: str,
) -> dict:
    import websockets

    from runs import services

    port = _free_port()
    command = (
        [sys.executable, "-m", "server.daphne_uvloop"]
        if loop == "uvloop"
        else [sys.executable, "-m", "daphne"]
    )
    env = {**os.environ, "METRICS_ENABLED": "1" if metrics == "on" else "0"}
    pauses_file = ROOT / "build" / f"gc-pauses-{port}.json"
    if gc_threshold is not None:  # uvloop's Daphne, its collections timed (bench/gc_probe.py)
        command = [sys.executable, "-m", "bench.gc_probe"]
        env |= {"GC_PROBE_THRESHOLD": gc_threshold, "GC_PROBE_OUT": str(pauses_file)}
    argv = [*command, "-b", "127.0.0.1", "-p", str(port), "quikday.asgi:application"]
    daphne = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    headers = {"Authorization": f"Token {token}"}
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        plan = [{"tool": "echo", "args": {"n": i}} for i in range(steps)]
        run_ids = []
        for _ in range(runs):
            run = await asyncio.to_thread(services.run_create, owner=user, steps=plan)
            await asyncio.to_thread(services.run_start, run_id=run.id)
            run_ids.append(run.id)

        def url(i: int) -> str:
            return f"ws://127.0.0.1:{port}/ws/runs/{run_ids[i % runs]}/"

        async with websockets.connect(url(0), additional_headers=headers) as warm:  # imports, connections
            await warm.recv()
        before_connects = _cpu_s(daphne.pid)
        began = time.perf_counter()
        sockets = []
        for start in range(0, watchers, batch):
            opened = await asyncio.gather(
                *(
                    websockets.connect(url(i), additional_headers=headers, max_queue=None)
                    for i in range(start, min(watchers, start + batch))
                )
            )
            for ws in opened:
                await ws.recv()  # connected
            sockets += opened
        connect_s = time.perf_counter() - began
        idle_cpu = _cpu_s(daphne.pid)
        await asyncio.sleep(idle)
        before_frames = _cpu_s(daphne.pid)
        frames = 0

        async def read(ws) -> None:
            nonlocal frames
            async for _ in ws:  # ends at the server's close after run_completed
                frames += 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]

        def produce() -> None:
            for index in range(steps):
                for run_id in run_ids:
                    services.step_start(run_id=run_id, index=index)
                    services.step_succeed(run_id=run_id, index=index, output={"n": index})
            for run_id in run_ids:
                services.run_succeed(run_id=run_id, output=None)

        await asyncio.to_thread(produce)
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        after = _cpu_s(daphne.pid)
        result = {
            "loop": loop if gc_threshold is None else f"uvloop, gc {gc_threshold}",
            "metrics": metrics,
            "watchers": watchers,
            "connect_cpu_ms": round((idle_cpu - before_connects) * 1000 / watchers, 3),
            "connects_per_s": round(watchers / connect_s, 1),
            "idle_cpu_pct": round((before_frames - idle_cpu) * 100 / idle, 1) if idle else None,
            "frames": frames,
            "frame_cpu_us": round((after - before_frames) * 1e6 / frames, 1),
        }
    finally:
        daphne.terminate()
        daphne.wait(15)
    if gc_threshold is not None:  # written by the process at its exit
        result |= _pause_figures(pauses_file)
        pauses_file.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loops", default="asyncio,uvloop,asyncio,uvloop")
    parser.add_argument(
        "--metrics", default="on", help="METRICS_ENABLED per trial: on or off, one value or one per loop"
    )
    parser.add_argument(
        "--gc",
        default="",
        help="collector thresholds per trial (uvloop), e.g. default,20000:20:20; each collection timed",
    )
    parser.add_argument("--watchers", type=int, default=400)
    parser.add_argument(
        "--batch", type=int, default=100, help="clients connecting at once (a storm: --watchers)"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="seconds the sockets idle before the events (CPU %% of a core)",
    )
    args = parser.parse_args()
    from bench.write_cost import setup_web_tool

    _, user, token_key = setup_web_tool("web-cost")

    thresholds = [value.replace(":", ",") for value in args.gc.split(",")] if args.gc else []
    loops = ["uvloop"] * len(thresholds) if thresholds else args.loops.split(",")
    switches = args.metrics.split(",")
    if len(switches) == 1:
        switches *= len(loops)
    if len(switches) != len(loops) or not set(switches) <= {"on", "off"}:
        parser.error("--metrics: on or off, one value or one per loop")

    async def run_all() -> None:
        for position, (loop, metrics) in enumerate(zip(loops, switches, strict=True)):
            result = await trial(
                loop=loop, metrics=metrics, gc_threshold=thresholds[position] if thresholds else None,
                watchers=args.watchers, runs=args.runs, steps=args.steps,
                idle=args.idle, batch=args.batch, user=user, token=token_key,
            )  # fmt: skip
            print(json.dumps(result), flush=True)

    asyncio.run(run_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
