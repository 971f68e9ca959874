"""The real stack for the bench: Daphne and Celery worker processes, the load
client, /proc readings and PostgreSQL statistics.

Every process is started here, on a free loopback port, and stopped here by
its own pid. Shared services (PostgreSQL on 5432, Redis on 6379) are only
used: the bench works in its own database and Redis db and never flushes or
reconfigures anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Starts processes with logs in ``logdir``; stops exactly those."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.started: list[subprocess.Popen] = []
        self.count = 0

    def start(self, name: str, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        self.count += 1
        log = open(self.logdir / f"{self.count:03d}-{name}.log", "wb")
        kwargs.setdefault("stdout", log)
        if kwargs.get("stderr", subprocess.STDOUT) is None:
            kwargs["stderr"] = log  # a piped client: its stderr still goes to the log
        kwargs.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, **kwargs)
        proc.log = log
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log = getattr(proc, "log", None)
        if log is not None:
            log.close()
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.started)):
            self.stop(proc)


def web_processes(env: dict[str, str]) -> int:
    """How many Daphne processes the web command starts: WEB_CONCURRENCY, else the cores."""
    return int(env.get("WEB_CONCURRENCY") or 0) or len(os.sched_getaffinity(0))


def start_web(
    procs: Processes, env: dict[str, str], app: str = "quikday.asgi:application"
) -> tuple[subprocess.Popen, int]:
    """The web command serving ``app`` as the Procfile deploys it (server/web_command.py:
    WEB_CONCURRENCY Daphne processes on one port, a listen backlog of 2,048), on a free loopback port.

    Returns the parent; its Daphne processes are ``web_pids(parent)``. The parent
    binds the port before its children start, so readiness is every child's
    "Listening" line in the log, not the port answering.
    """
    port = free_port()
    count = web_processes(env)
    argv = [
        PYTHON,
        "-m",
        "server.web_command",
        "--port",
        str(port),
        "--backlog",
        "2048",
        "--processes",
        str(count),
    ]
    proc = procs.start("web", [*argv, "--", app], env)
    deadline = time.monotonic() + 60
    while Path(proc.log.name).read_text(errors="replace").count("Listening on TCP address") < count:
        if proc.poll() is not None:
            raise RuntimeError(f"the web command exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the web command's {count} processes are not all listening after 60 s")
        time.sleep(0.1)
    return proc, port


def web_pids(parent: subprocess.Popen) -> list[int]:
    """The web command's Daphne processes (the parent's live children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == parent.pid and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def start_worker(procs: Processes, env: dict[str, str], name: str) -> subprocess.Popen:
    """One Celery worker process (solo pool: one run at a time, like --concurrency 1)."""
    argv = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "quikday",
        "worker",
        "-P",
        "solo",
        "-Q",
        env["CELERY_QUEUE"],
        "-n",
        f"{name}@bench",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "WARNING",
    ]
    return procs.start(name, argv, env)


# --- /proc -----------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def machine_cpu_seconds() -> tuple[float, float]:
    """All cores' busy and total time since boot (``/proc/stat``; idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return (total - values[3] - values[4]) / CLK_TCK, total / CLK_TCK


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's name (``comm``) and CPU seconds so far, by pid (those readable now)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        fields = rest.split()
        found[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return found


def cpu_spent_by(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], group) -> dict:
    """CPU seconds between two ``cpu_by_process`` snapshots, summed by ``group(pid, comm)``, over
    the processes alive at both (one that started or ended between them is not counted)."""
    spent: dict[str, float] = {}
    for pid, (comm, cpu) in after.items():
        if pid in before and before[pid][0] == comm:
            name = group(pid, comm)
            spent[name] = spent.get(name, 0.0) + cpu - before[pid][1]
    return spent


def cpu_percent(pids: list[int], window: float) -> float:
    """Share of one core the processes used together over ``window`` seconds."""
    before, began = sum(map(cpu_seconds, pids)), time.perf_counter()
    time.sleep(window)
    return round(100 * (sum(map(cpu_seconds, pids)) - before) / (time.perf_counter() - began), 2)


# --- the load client ---------------------------------------------------------------


# Descriptors a load client keeps for itself (its pipes, libraries, the odd file):
# it holds at most its RLIMIT_NOFILE less this many sockets.
CLIENT_FD_HEADROOM = 100


class LoadClient:
    """bench/client.py in its own process, spoken to in JSON lines."""

    def __init__(self, procs: Processes, env: dict[str, str], name: str = "client"):
        argv = [PYTHON, str(ROOT / "bench" / "client.py")]
        self.proc = procs.start(name, argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        self.procs = procs
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"the load client did not start: {hello}")
        self.nofile = hello["nofile"]

    @property
    def max_sockets(self) -> int:
        """The most sockets this process can hold (its hard RLIMIT_NOFILE bounds it)."""
        return self.nofile - CLIENT_FD_HEADROOM

    def call(self, op: str, **args) -> dict:
        self.send(op, **args)
        return self.receive(op)

    def send(self, op: str, **args) -> None:
        """Start ``op``; ``receive`` its answer (other clients may work meanwhile)."""
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, op: str) -> dict:
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"load client {op}: {answer['error']}")
        return answer

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load client exited ({self.proc.poll()})")
        return json.loads(line)

    def exit(self) -> None:
        try:
            self.call("exit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        self.procs.stop(self.proc)


def call_all(clients: list[LoadClient], op: str, args: list[dict] | None = None) -> list[dict]:
    """``op`` on every client at once (``args[i]`` for client i); their answers in order."""
    for client, each in zip(clients, args or [{}] * len(clients), strict=True):
        client.send(op, **each)
    return [client.receive(op) for client in clients]


# --- PostgreSQL ----------------------------------------------------------------------


def pg_admin_dsn(database_url: str) -> tuple[str, str]:
    """(DSN of the server's ``postgres`` database, name of the bench database)."""
    from urllib.parse import urlparse

    parsed = urlparse(database_url)
    dbname = parsed.path.lstrip("/")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 5432
    user = parsed.username or "postgres"
    password = f" password={parsed.password}" if parsed.password else ""
    return f"host={host} port={port} user={user} dbname=postgres{password}", dbname


def pg_transactions(admin_dsn: str, dbname: str) -> int:
    """Committed + rolled-back transactions of ``dbname`` so far (every autocommit
    query is one). Read from another database, so the reading is not counted."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [dbname]
        ).fetchone()
    return int(row[0]) if row else 0


def pg_has_statements(admin_dsn: str) -> bool:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return bool(
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        )
