"""What a web process spends on idle WebSockets: CPU while nothing happens, RSS per socket.

Starts one Daphne process (on uvloop, as the web command does) from a source
tree, opens ``--sockets`` WebSocket clients (token auth, push mode, over
``--runs`` runs, 200 at a time; with ``--list``, run-list sockets /ws/runs/
instead, each showing the user's runs) that then send nothing, waits ``--settle``
seconds (an idle backend reports its statistics up to 10 s late) and reads,
from ``/proc/<pid>/stat``, the Daphne process's CPU time over ``--window``
seconds — by default 120 s, two whole access re-check periods
(REALTIME_ACCESS_RECHECK_SECONDS, 60 s), so whatever runs once per period per
socket is counted at its average whatever the sockets' phase — and its RSS
(VmRSS) before the sockets and after. Also the database transactions of the
window (``pg_stat_database``, read from another database). Daphne pings every
socket (the client's websockets answers); the client sends no pings of its own.

``--trees`` names source trees to run Daphne from, one trial each, in order:
``--trees .,/tmp/before,.,/tmp/before`` interleaves this checkout with an
older one (``git archive <commit> | tar -x -C /tmp/before``) on the same
database and Redis. ``--profile SECONDS`` records the idle Daphne with py-spy
after the window (collapsed stacks next to the JSON line's ``profile``).
``--daphne-args`` is passed to Daphne (e.g. ``--ping-interval 50``).

Usage: python bench/idle_cost.py [--trees .] [--sockets 5000] [--window 120] [--list]
  (DATABASE_URL's server, in bench/write_cost.py's database; REDIS_URL's Redis.)
One JSON line per trial.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import cpu_seconds, pg_admin_dsn, pg_transactions, rss_kb  # noqa: E402

BATCH = 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _open(url: str, token: str):
    import websockets

    # Daphne pings every socket (websockets answers); the client sends no pings of its own.
    ws = await websockets.connect(
        url, additional_headers={"Authorization": f"Token {token}"}, ping_interval=None
    )
    await ws.recv()  # connected
    return ws


async def trial(tree: Path, args, *, run_ids: list, token: str, database_url: str) -> dict:
    port = _free_port()
    argv = [sys.executable, "-m", "server.daphne_uvloop", "-b", "127.0.0.1", "-p", str(port)]
    argv += [*shlex.split(args.daphne_args), "quikday.asgi:application"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    daphne = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sockets = []
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/ws/runs/"
        warm = await _open(f"{url}{run_ids[0]}/", token)  # imports, pools, the hub's channel
        await warm.close()

        def path(i: int) -> str:
            return "" if args.list else f"{run_ids[i % len(run_ids)]}/"

        await asyncio.sleep(1.0)
        rss_before = rss_kb(daphne.pid)
        began = time.perf_counter()
        for start in range(0, args.sockets, BATCH):
            count = min(BATCH, args.sockets - start)
            sockets += await asyncio.gather(*(_open(url + path(start + i), token) for i in range(count)))
        open_s = time.perf_counter() - began
        await asyncio.sleep(args.settle)
        admin_dsn, dbname = pg_admin_dsn(database_url)
        tx_before, cpu_before, window_began = (
            pg_transactions(admin_dsn, dbname),
            cpu_seconds(daphne.pid),
            time.perf_counter(),
        )
        await asyncio.sleep(args.window)
        cpu = cpu_seconds(daphne.pid) - cpu_before
        window = time.perf_counter() - window_began
        rss_after = rss_kb(daphne.pid)
        held = sum(1 for ws in sockets if ws.close_code is None)
        profile = None
        if args.profile:
            profile = str(Path(args.out) / f"idle-{tree.name or 'tree'}-{daphne.pid}.txt")
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daphne.pid)]
            # Not subprocess.run: this loop must keep answering Daphne's pings meanwhile.
            recorder = await asyncio.create_subprocess_exec(
                *spy,
                *["--duration", str(int(args.profile)), "--format", "raw", "--output", profile],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await recorder.wait()
        # An idle backend reports its statistics up to 10 s late: read them after that.
        await asyncio.sleep(11.0)
        tx = pg_transactions(admin_dsn, dbname) - tx_before
        tx_span = time.perf_counter() - window_began
        cpu_pct = 100 * cpu / window
        return {
            "tree": str(tree),
            "endpoint": "/ws/runs/" if args.list else "/ws/runs/<id>/",
            "daphne_args": args.daphne_args,
            "sockets": held,
            "open_s": round(open_s, 1),
            "window_s": round(window, 1),
            "idle_cpu_pct": round(cpu_pct, 2),
            "idle_cpu_pct_per_10k": round(cpu_pct * 10_000 / max(1, held), 2),
            "kb_per_socket": round((rss_after - rss_before) / max(1, held), 1),
            "db_tx_per_s": round(tx / tx_span, 2),
            "profile": profile,
        }
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        daphne.terminate()
        daphne.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", default=".")
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--settle", type=float, default=12.0)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--daphne-args", default="")
    parser.add_argument("--list", action="store_true", help="run-list sockets (/ws/runs/), not run sockets")
    parser.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy after the window")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    from bench.write_cost import setup_web_tool

    database_url, user, token_key = setup_web_tool("idle-cost")
    from runs import services

    # Processing runs: a finished run's socket is closed after its snapshot.
    run_ids = []
    for _ in range(args.runs):
        run = services.run_create(owner=user, steps=[{"tool": "echo"}])
        services.run_start(run_id=run.id)
        run_ids.append(run.id)

    async def run_all() -> None:
        for tree in args.trees.split(","):
            result = await trial(
                Path(tree).resolve(), args, run_ids=run_ids, token=token_key, database_url=database_url
            )
            print(json.dumps(result), flush=True)

    asyncio.run(run_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
