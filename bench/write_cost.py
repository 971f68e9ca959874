"""What a worker spends per event, in CPU time: the write path on its own.

A worker-like synchronous Django process executes runs of ``steps`` echo steps
with runs.executor.execute_run — the Celery task's body: lease, services,
signals, the event append, commit, publish — and counts, per event:

- the worker's CPU (``time.process_time``: every thread of the process,
  the publisher's loop thread included);
- its PostgreSQL backend's CPU (``/proc/<backend pid>/stat``: the server
  runs on this machine) and its Redis server's (a redis-server of its own,
  ``INFO cpu``), so other processes on a shared machine do not count;
- statements sent (a Django execute wrapper; BEGIN and COMMIT are not among them);
- wall time (not comparable between machines, or on a busy one);
- the event log's bytes per event: ``pg_total_relation_size`` of the
  table (heap, TOAST and indexes) over its rows, in a database of its own.

CPU time is what a busy machine distorts least: other processes take turns
on the cores, but each process is charged only for its own time (caches and
frequency still move it a little; repeat and take the median).

Usage: python bench/write_cost.py [--runs 200] [--steps 3] [--repeats 3]
  (DATABASE_URL's server; the database is <name>_writecost, created here.)
Prints one JSON line per repeat and a summary line (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class OwnRedis:
    """A redis-server of this measurement's own: its CPU is the publishes' alone."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def cpu_s(self) -> float:
        import redis

        info = redis.Redis.from_url(self.url).info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class StatementCounter:
    """A Django execute wrapper: statements sent."""

    def __init__(self) -> None:
        self.statements = 0

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        return execute(sql, params, many, context)


def prepare(database_url: str) -> str:
    """A database of this tool's own next to DATABASE_URL's, migrated; its URL."""
    import psycopg

    sys.path.insert(0, str(ROOT / "bench"))
    from bench.stack import pg_admin_dsn

    admin_dsn, dbname = pg_admin_dsn(database_url)
    name = f"{dbname}_writecost"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + "/" + name
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": os.environ.get("SECRET_KEY") or "write-cost-only"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    return url


def setup_web_tool(name: str):
    """For a tool that starts its own Daphne (bench/web_cost.py, bench/idle_cost.py): Django on
    prepare()'s database and REDIS_URL (db 13 unless set), set up as the bench's web processes
    are; the user ``name`` and its token. Returns (database URL, user, token key)."""
    database_url = prepare(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/quikday"))
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")
    os.environ.setdefault("SECRET_KEY", f"{name}-only")
    os.environ.update(
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="quikday.settings",
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username=name)
    token, _ = Token.objects.get_or_create(user=user)
    return database_url, user, token.key


def measure(runs: int, steps: int, redis_server: OwnRedis) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from realtime.events import publisher
    from realtime.models import RunEvent
    from runs import executor, services

    user, _ = get_user_model().objects.get_or_create(username="write-cost")
    plan = [{"tool": "echo", "args": {"text": f"step {i}", "n": i}} for i in range(steps)]
    run_ids = [services.run_create(owner=user, steps=plan).id for _ in range(runs)]
    publisher.connect_publisher()
    executor.execute_run(run_id=services.run_create(owner=user, steps=plan).id)  # warm: caches, plans
    events_before = RunEvent.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    counter = StatementCounter()
    pg_before, redis_before = _proc_cpu_s(backend), redis_server.cpu_s()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with connection.execute_wrapper(counter):
        for run_id in run_ids:
            executor.execute_run(run_id=run_id)
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    pg_cpu, redis_cpu = _proc_cpu_s(backend) - pg_before, redis_server.cpu_s() - redis_before
    events = RunEvent.objects.count() - events_before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size(%s), count(*) FROM realtime_runevent", [RunEvent._meta.db_table]
        )
        table_bytes, rows = cursor.fetchone()
    per = 1000 / events
    return {
        "runs": runs,
        "events": events,
        "worker_cpu_ms_per_event": round(cpu * per, 3),
        "postgres_backend_cpu_ms_per_event": round(pg_cpu * per, 3),
        "redis_cpu_ms_per_event": round(redis_cpu * per, 4),
        "statements_per_event": round(counter.statements / events, 2),
        "wall_ms_per_event": round(wall * per, 3),
        "runs_per_s_wall": round(runs / wall, 1),
        "event_log_bytes_per_event": round(table_bytes / rows, 1),
        "event_log_rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    redis_server = OwnRedis()
    try:
        os.environ["DATABASE_URL"] = prepare(
            os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/quikday")
        )
        os.environ["REDIS_URL"] = redis_server.url
        os.environ.pop("REALTIME_REDIS_URLS", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")
        os.environ.setdefault("SECRET_KEY", "write-cost-only")
        os.environ["LOG_LEVEL"] = "WARNING"
        import django

        django.setup()
        results = []
        for _ in range(args.repeats):
            results.append(measure(args.runs, args.steps, redis_server))
            print(json.dumps(results[-1]), flush=True)
        summary = {
            key: statistics.median(r[key] for r in results)
            for key in results[0]
            if key not in ("runs", "events", "event_log_rows")
        }
        print(json.dumps({"median_of": len(results), **summary}), flush=True)
    finally:
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
