"""The ASGI server underneath, measured: Daphne, uvicorn and granian serving the same application.

Each server serves quikday.asgi:application (production settings, PostgreSQL and
Redis) as ONE process, so every figure is per process:

- **daphne**: the Procfile's web command (server/web_command.py, ``--processes 1``): Daphne
  on uvloop with our server (server/daphne_process.py); the figures are its child's.
- **uvicorn**: ``uvicorn --loop uvloop --http httptools --ws websockets`` (one process).
- **granian**: ``granian --interface asginl --loop uvloop --workers 1`` (ASGI without
  the lifespan protocol, which Channels' router does not speak); its worker's figures.

Per trial, with the load client (bench/client.py) in its own process and events
produced from this one through runs.services (commit → publish):

- CPU per connect: the server process's CPU time (``/proc/<pid>/stat``) over
  ``--watchers`` token connects, 100 at a time, each until its ``connected`` frame
  (handshake, auth, the connect read, the frame);
- RSS per idle socket: VmRSS after those connects less before, over the sockets;
- CPU per frame and fan-out frames/s: every one of ``--runs`` runs (watchers spread
  evenly) driven through ``--steps`` steps by ``--producers`` threads; the server's CPU
  and the wall time from the first event until the client has every frame;
- the storms: ``--storm`` and ``--big-storm`` clients connecting at once; the time
  until all are connected (and the server's CPU per connect in the storm).

CPU time, not wall time, is the per-unit figure: on a loaded machine each process
is charged only for its own time. Trials are interleaved (daphne, uvicorn,
granian, daphne, ...); the summary gives each figure's median and range.

    python bench/servers.py [--servers daphne,uvicorn,granian] [--repeats 3]
        [--python /tmp/venv/bin/python]   (the interpreter the servers run on)

A server whose package the interpreter lacks gets a "not installed" row.
``bench/run.py --only servers`` runs the same comparison inside the bench.
Writes bench/results/<date>-servers.json (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402

SERVERS = ("daphne", "uvicorn", "granian")
APPLICATION = "quikday.asgi:application"
# The frame size cap every server is given (Daphne's is set by our web command's defaults).
MAX_MESSAGE_BYTES = 1 << 20
CONNECT_BATCH = 100
BACKLOG = 2048  # the web command's listen backlog (Procfile: WEB_LISTEN_BACKLOG), given to each
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/quikday_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"


def installed(python: str, server: str) -> bool:
    module = {"daphne": "daphne", "uvicorn": "uvicorn", "granian": "granian"}[server]
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], cwd=ROOT).returncode == 0


def server_argv(python: str, server: str, port: int) -> list[str]:
    if server == "daphne":  # what the Procfile's web runs, one process
        return [
            python, "-m", "server.web_command", "--port", str(port), "--backlog", str(BACKLOG),
            "--processes", "1",
            "--", "--proxy-headers", APPLICATION,
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
            "--ws-max-size", str(MAX_MESSAGE_BYTES), "--lifespan", "off", "--proxy-headers",
            "--backlog", str(BACKLOG),
            "--log-level", "warning", "--no-access-log", APPLICATION,
        ]  # fmt: skip
    return [
        python, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--backlog", str(BACKLOG), "--log-level", "warning",
        "--no-access-log", APPLICATION,
    ]  # fmt: skip


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


class Server:
    """One server process serving the application on a free port; ``pid`` is the one that serves."""

    def __init__(self, procs: stack.Processes, env: dict[str, str], python: str, name: str):
        self.procs, self.name = procs, name
        self.port = stack.free_port()
        self.proc = procs.start(f"server-{name}", server_argv(python, name, self.port), env)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode} (log: {self.proc.log.name})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} is not listening after 90 s")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        # The web command and granian serve from a child; uvicorn (one worker) from itself.
        children = _children(self.proc.pid) if name in ("daphne", "granian") else []
        self.pid = children[0] if children else self.proc.pid

    def cpu_s(self) -> float:
        return stack.cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return stack.rss_kb(self.pid)

    def stop(self) -> None:
        self.procs.stop(self.proc, timeout=30)


def _wait_frames(client: stack.LoadClient, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        frames = client.call("count")["frames"]
        if frames >= expected or time.monotonic() > deadline:
            return frames
        time.sleep(0.05)


def trial(ctx, name: str, python: str, sizes: argparse.Namespace) -> dict:
    """Every figure of one server, one process, one repeat."""
    from django.db import connection

    from runs import services

    server = Server(ctx.procs, ctx.env, python, name)
    client, url = ctx.client, f"ws://127.0.0.1:{server.port}"
    out: dict = {"server": name}
    try:
        warm = ctx.fixtures.make_runs(1, steps=1)
        client.call("open", url=url, token=ctx.token, runs=warm, per_run=5, batch=5)  # imports, connections
        client.call("close")
        time.sleep(1.0)

        # Connects, then the idle sockets' RSS.
        run_ids = ctx.fixtures.make_runs(sizes.runs, steps=sizes.steps)
        rss0, cpu0 = server.rss_kb(), server.cpu_s()
        opened = client.call(
            "open", url=url, token=ctx.token, runs=run_ids, per_run=sizes.watchers // sizes.runs,
            batch=CONNECT_BATCH,
        )  # fmt: skip
        cpu1 = server.cpu_s()
        time.sleep(2.0)
        watchers = opened["connected"]
        out.update(
            connected=watchers,
            connect_cpu_ms=round((cpu1 - cpu0) * 1000 / max(watchers, 1), 3),
            connects_per_s=round(watchers / max(opened["elapsed_s"], 1e-6), 1),
            rss_per_socket_kb=round((server.rss_kb() - rss0) / max(watchers, 1), 2),
        )

        # Fan-out: every step's two events to every watcher of its run.
        client.call("reset")
        expected = watchers * sizes.steps * 2
        cpu2, began = server.cpu_s(), time.perf_counter()

        def drive(run_id: str) -> None:
            try:
                for index in range(sizes.steps):
                    services.step_start(run_id=run_id, index=index)
                    services.step_succeed(run_id=run_id, index=index, output={"n": index})
            finally:
                connection.close()  # back to the pool: the thread's connection is not closed otherwise

        with ThreadPoolExecutor(sizes.producers) as pool:
            list(pool.map(drive, run_ids))
        produced_s = time.perf_counter() - began
        frames = _wait_frames(client, expected, timeout=120)
        delivered_s = time.perf_counter() - began
        cpu3 = server.cpu_s()
        stats = client.call("stats")
        out.update(
            frames=frames,
            frames_expected=expected,
            frame_cpu_us=round((cpu3 - cpu2) * 1e6 / max(frames, 1), 1),
            fanout_frames_per_s=round(frames / delivered_s, 1),
            fanout_events_per_s=round(len(run_ids) * sizes.steps * 2 / produced_s, 1),
            fanout_p99_ms=stats["latency_ms"]["p99"],
            fanout_server_cpu_pct=round(100 * (cpu3 - cpu2) / delivered_s, 1),
        )
        for run_id in run_ids:
            services.run_succeed(run_id=run_id, output=None)
        client.call("wait_closed", timeout=20)
        client.call("close")
        time.sleep(1.0)

        # The storms: all at once.
        for clients, prefix in ((sizes.storm, "storm"), (sizes.big_storm, "storm_big")):
            if not clients:
                continue
            storm_runs = ctx.fixtures.make_runs(10, steps=1)
            cpu4 = server.cpu_s()
            opened = client.call(
                "open", url=url, token=ctx.token, runs=storm_runs, per_run=clients // 10, batch=clients
            )
            cpu5 = server.cpu_s()
            client.call("close")
            out.update(
                {
                    f"{prefix}_clients": clients,
                    f"{prefix}_connected": opened["connected"],
                    f"{prefix}_all_s": opened["elapsed_s"],
                    f"{prefix}_errors": opened["errors"],
                    f"{prefix}_cpu_ms_per_connect": round(
                        (cpu5 - cpu4) * 1000 / max(opened["connected"], 1), 3
                    ),
                }
            )
            time.sleep(2.0)
    finally:
        server.stop()
    return out


FIGURES = (
    ("connect_cpu_ms", "CPU per connect (ms), 100 at a time", 3),
    ("frame_cpu_us", "CPU per frame delivered (µs)", 1),
    ("rss_per_socket_kb", "RSS per idle socket (KB)", 1),
    ("storm_all_s", "storm: all connected (s)", 2),
    ("storm_cpu_ms_per_connect", "… CPU per connect in it (ms)", 3),
    ("storm_big_connected", "big storm: clients connected", 0),
    ("storm_big_all_s", "… all of those within (s)", 2),
    ("storm_big_cpu_ms_per_connect", "… CPU per connect in it (ms)", 3),
    ("fanout_frames_per_s", "fan-out: frames/s delivered", 0),
    ("fanout_server_cpu_pct", "… the server's CPU meanwhile (% of a core)", 0),
    ("connects_per_s", "connects/s, 100 at a time", 0),
)


def summarize(trials: list[dict]) -> dict:
    """{server: {figure: {"median", "min", "max", "n"}}} over the trials."""
    summary: dict = {}
    for row in trials:
        if "error" in row:
            continue
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                summary.setdefault(row["server"], {}).setdefault(key, []).append(value)
    return {
        server: {
            key: {"median": statistics.median(vs), "min": min(vs), "max": max(vs), "n": len(vs)}
            for key, vs in figures.items()
        }
        for server, figures in summary.items()
    }


def markdown(result: dict) -> str:
    servers = [s for s in result["servers"] if s in result["summary"]]
    head = "| figure (median [min, max] of the trials) | " + " | ".join(servers) + " |"
    rows = [head, "|---|" + "---:|" * len(servers)]
    for key, label, digits in FIGURES:
        cells = []
        for server in servers:
            figure = result["summary"][server].get(key)
            if figure is None:
                cells.append("—")
                continue
            fmt = f"{{:,.{digits}f}}"
            cells.append(
                f"{fmt.format(figure['median'])} [{fmt.format(figure['min'])}, {fmt.format(figure['max'])}]"
            )
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    for server, reason in result.get("skipped", {}).items():
        rows.append(f"| {server} | {reason} |" + " |" * (len(servers) - 1))
    return "\n".join(rows)


def compare(
    ctx, *, servers: list[str], python: str, repeats: int, sizes: argparse.Namespace, say=print
) -> dict:
    """The comparison, on the bench's processes, client and fixtures (``ctx``: bench/scenarios.Ctx)."""
    skipped = {s: f"not installed in {python}" for s in servers if not installed(python, s)}
    trials = []
    for repeat in range(repeats):
        for name in servers:
            if name in skipped:
                continue
            say(f"servers · repeat {repeat + 1}/{repeats} · {name}")
            try:
                row = trial(ctx, name, python, sizes)
            except Exception as error:  # a server that breaks is a finding, not the end of the run
                row = {"server": name, "error": f"{type(error).__name__}: {error}"}
            row["repeat"] = repeat
            say("  " + json.dumps(row))
            trials.append(row)
    return {
        "servers": servers,
        "python": python,
        "versions": versions(python, [s for s in servers if s not in skipped]),
        "sizes": vars(sizes),
        "skipped": skipped,
        "trials": trials,
        "summary": summarize(trials),
    }


def versions(python: str, servers: list[str]) -> dict[str, str]:
    names = {"daphne": ["daphne", "Twisted", "autobahn"], "uvicorn": ["uvicorn", "httptools", "websockets"]}
    wanted = [n for s in servers for n in names.get(s, [s])] + ["uvloop", "channels"]
    probe = (
        "import json, sys\nfrom importlib import metadata\n"
        "print(json.dumps({n: metadata.version(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run([python, "-c", probe, *wanted], capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout) if done.returncode == 0 else {}


# Sizes for bench/run.py: full (make bench), quick, smoke (the suite's test of the bench).
FULL = argparse.Namespace(watchers=1000, runs=10, steps=15, producers=4, storm=1000, big_storm=5000)
QUICK = argparse.Namespace(watchers=100, runs=10, steps=3, producers=4, storm=100, big_storm=200)
SMOKE = argparse.Namespace(watchers=10, runs=2, steps=1, producers=2, storm=10, big_storm=20)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watchers", type=int, default=1000, help="sockets for the connect and fan-out figures"
    )
    parser.add_argument("--runs", type=int, default=10, help="runs the watchers are spread over")
    parser.add_argument("--steps", type=int, default=15, help="steps per run (two events each)")
    parser.add_argument("--producers", type=int, default=4, help="threads producing the events")
    parser.add_argument("--storm", type=int, default=1000, help="clients in the first storm")
    parser.add_argument("--big-storm", type=int, default=5000, help="clients in the second storm")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default=sys.executable, help="the interpreter the servers run on")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    add_size_arguments(parser)
    args = parser.parse_args()
    servers = args.servers.split(",")
    if set(servers) - set(SERVERS):
        parser.error(f"--servers: of {', '.join(SERVERS)}")
    sizes = argparse.Namespace(
        **{k: getattr(args, k) for k in ("watchers", "runs", "steps", "producers", "storm", "big_storm")}
    )

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # every server process inherits it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "RUNS_EXECUTOR", "CELERY_"))}
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env.setdefault("SECRET_KEY", "bench-only-secret-key")
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="quikday-servers-metrics-"))
    env.update(
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="quikday.settings",
        PYTHONUNBUFFERED="1",
    )
    os.environ.update(env)
    import psycopg

    admin_dsn, dbname = stack.pg_admin_dsn(env["DATABASE_URL"])
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
            conn.execute(f'CREATE DATABASE "{dbname}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    import django

    django.setup()
    from bench import fixtures
    from bench.scenarios import FULL, Ctx

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    procs = stack.Processes(ROOT / "bench" / "results" / "logs" / f"{stamp}-servers")
    try:
        client = stack.LoadClient(procs, env)
        ctx = Ctx(procs, env, client, fixtures.token(), admin_dsn, dbname, FULL, fixtures)
        result = compare(ctx, servers=servers, python=args.python, repeats=args.repeats, sizes=sizes)
        client.exit()
    finally:
        procs.stop_all()
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    out = Path(args.out) / f"{stamp}-servers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
