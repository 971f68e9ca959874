"""PostgreSQL connections the Procfile's processes hold under load (docs/operations.md explains the bound).

Starts a PostgreSQL server of its own (tests/own_postgres.py: nobody else's
connections counted, and nobody else's server exhausted), migrates it, then
the Procfile's ``web`` (``python -m server.web_command``, 2 Daphne processes) and 2
Procfile ``worker``s, each with the platform's defaults unless ``--setting``
says otherwise. The load: ``--runs`` runs created at once (POST /api/runs/,
all in flight together; the workers execute them), then ``--gets`` GETs of
the run list and of single runs, ``--concurrency`` at a time. Meanwhile
``pg_stat_activity`` is read every few milliseconds, by role (each process
names itself with ``PGAPPNAME``). Reported: the answers by status (a 503 is a
request that found no connection), the most connections each role held at
once, and what they still hold ``--idle`` seconds after the load.

Usage: python bench/db_connections.py [--gets 2000] [--concurrency 40] [--runs 500]
           [--idle 70] [--setting DATABASE_POOL=0 ...]
One JSON object on stdout. tests/test_db_connections.py runs the same load and
holds the peaks to the documented bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEB_ROLE = "quikday-web"
WORKER_ROLE = "quikday-worker"
RUN_PLAN = [{"tool": "echo", "args": {"n": n}} for n in range(3)]


class ConnectionCounter:
    """Counts the connections of each role (application_name) to ``dsn``'s database, on a thread.

    ``peak``: the most each role held at once while counting; ``now()``: what they hold now;
    ``unfinished(run_ids)``: how many of those runs have not ended. Its two connections are
    opened on entry, before any load: a server out of connections still answers them.
    """

    def __init__(self, dsn: str, roles: tuple[str, ...] = (WEB_ROLE, WORKER_ROLE), interval: float = 0.02):
        self.dsn, self.roles, self.interval = dsn, roles, interval
        self.peak: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-counter", daemon=True)
        self._sampling = self._asking = None

    def _connect(self):
        import psycopg

        return psycopg.connect(self.dsn, application_name="quikday-counter", autocommit=True)

    def now(self) -> Counter[str]:
        return self._count(self._asking)

    def unfinished(self, run_ids: list[str]) -> int:
        return self._asking.execute(
            "SELECT count(*) FROM runs_run WHERE id = ANY(%s::uuid[])"
            " AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            [run_ids],
        ).fetchone()[0]

    def wait_finished(self, run_ids: list[str], *, timeout: float) -> int:
        """Wait until every run has ended (or ``timeout``); how many have not."""
        deadline = time.monotonic() + timeout
        while (left := self.unfinished(run_ids)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def _count(self, connection) -> Counter[str]:
        rows = connection.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s) GROUP BY 1",
            [list(self.roles)],
        ).fetchall()
        return Counter(dict(rows))

    def _run(self) -> None:
        while not self._stop.is_set():
            for role, count in self._count(self._sampling).items():
                self.peak[role] = max(self.peak[role], count)
            self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionCounter:
        self._sampling, self._asking = self._connect(), self._connect()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sampling.close()
        self._asking.close()


async def _request(port: int, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request on a connection of its own; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def _status(port: int, method: str, path: str, token: str, body: bytes = b"") -> int:
    try:
        return (await _request(port, method, path, token, body))[0]
    except (OSError, IndexError, ValueError):
        return 0  # no answer at all


async def create_runs(port: int, token: str, count: int) -> tuple[Counter[int], list[str]]:
    """``count`` POST /api/runs/ all in flight at once; their statuses and the ids of those created."""
    body = json.dumps({"prompt": "bench", "steps": RUN_PLAN}).encode()

    async def one() -> tuple[int, str | None]:
        try:
            status, answer = await _request(port, "POST", "/api/runs/", token, body)
        except (OSError, IndexError, ValueError):
            return 0, None
        found = re.search(rb'"id":"([0-9a-f-]{36})"', answer) if status == 201 else None
        return status, found.group(1).decode() if found else None

    answers = await asyncio.gather(*(one() for _ in range(count)))
    return Counter(status for status, _ in answers), [run_id for _, run_id in answers if run_id]


async def get_many(port: int, token: str, count: int, concurrency: int, run_ids: list[str]) -> Counter[int]:
    """``count`` GETs, ``concurrency`` at a time: the run list, and single runs in turn."""
    paths = ["/api/runs/"] + [f"/api/runs/{run_id}/" for run_id in run_ids[:50]]
    statuses: Counter[int] = Counter()
    queue = iter(range(count))

    async def client() -> None:
        for i in queue:
            statuses[await _status(port, "GET", paths[i % len(paths)], token)] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def load(port: int, token: str, *, runs: int, gets: int, concurrency: int) -> dict:
    """The issue's load: ``runs`` runs created at once, then ``gets`` GETs ``concurrency`` at a time."""

    async def both() -> dict:
        created, run_ids = await create_runs(port, token, runs)
        got = await get_many(port, token, gets, concurrency, run_ids)
        return {"post": created, "get": got, "run_ids": run_ids}

    return asyncio.run(both())


def api_token(env: dict[str, str]) -> str:
    """The API token of the admin user ``manage.py ensure_admin`` makes (or finds) in env's database."""
    done = subprocess.run(
        [sys.executable, "manage.py", "ensure_admin"],
        cwd=ROOT,
        env={**env, "DJANGO_SUPERUSER_USERNAME": "bench", "DJANGO_SUPERUSER_PASSWORD": "bench-password-1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return re.search(r"API token:\s+([0-9a-f]{40})", done.stdout).group(1)


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def create_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def stack_env(database_url: str, redis_url: str, role: str, settings: dict[str, str]) -> dict[str, str]:
    """A Procfile process's environment: DEBUG off, plain HTTP allowed, named ``role`` in pg_stat_activity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REALTIME_", "WORKER_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_QUEUE": f"bench-connections-{os.getpid()}",
            "SECRET_KEY": "bench-" + "x" * 50,
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "quikday.settings",
            "PGAPPNAME": role,
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(settings)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--idle", type=float, default=70.0, help="seconds after the load to count again")
    parser.add_argument("--setting", action="append", default=[], help="NAME=value for every process")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)

    from tests.own_postgres import OwnPostgres
    from tests.processes import procfile_worker, web_servers

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    server = OwnPostgres()
    with ExitStack() as stack:
        server.create()
        stack.callback(server.destroy)
        create_database(server.url(), "bench")
        dsn = server.url("bench")
        admin_env = stack_env(dsn, redis_url, "quikday-admin", settings)
        migrate(admin_env)
        token = api_token(admin_env)
        web_env = stack_env(dsn, redis_url, WEB_ROLE, settings)
        web = stack.enter_context(web_servers(web_env, processes=2, ready_timeout=120))
        worker_env = stack_env(dsn, redis_url, WORKER_ROLE, settings)
        for _ in range(2):
            stack.enter_context(procfile_worker(worker_env, ready_timeout=120))
        started = time.monotonic()
        with ConnectionCounter(dsn) as counter:
            answers = load(web.port, token, runs=args.runs, gets=args.gets, concurrency=args.concurrency)
            unfinished = counter.wait_finished(answers["run_ids"], timeout=600)
            took = time.monotonic() - started
            time.sleep(args.idle)
            idle = counter.now()
        log = web.log()
    print(
        json.dumps(
            {
                "settings": settings,
                "post": dict(answers["post"]),
                "get": dict(answers["get"]),
                "runs_unfinished": unfinished,
                "peak_connections": dict(counter.peak),
                "idle_connections_after": {"seconds": args.idle, **idle},
                "too_many_clients_in_web_log": log.count("too many clients"),
                "load_seconds": round(took, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
