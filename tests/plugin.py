"""Loaded before Django (``-p tests.plugin``): points the suite at real services.

Defaults: PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (override
with DATABASE_URL / REDIS_URL). Under CI=true a missing service fails the run;
on a person's machine the suite falls back to SQLite / no Redis and skips the
tests marked ``postgres`` / ``redis`` with a one-line reason.
"""

import faulthandler
import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from urllib.parse import urlparse

import pytest

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/quikday"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


# A checkout's .env (`make run` writes one: DEBUG=1) is a person's settings, not the suite's:
# no test or process it starts reads it unless the test names a file itself.
os.environ.setdefault("QUIKDAY_ENV_FILE", "")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
# Nothing is collected for tests: static files are served from the apps (see settings).
os.environ.setdefault("STATIC_MANIFEST", "0")
# Per-user quotas off: most tests create runs of one user in bulk. The quota
# tests (tests/runs/test_quotas.py) turn them on with the settings fixture.
os.environ.setdefault("RUNS_MAX_ACTIVE_PER_USER", "0")
os.environ.setdefault("RUNS_MAX_CREATES_PER_MINUTE", "0")
# Fair execution off likewise (each run dispatched at its create, as most tests
# expect); tests/runs/test_fairness.py turns it on.
os.environ.setdefault("RUNS_MAX_INFLIGHT_PER_USER", "0")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver,[::1]")
os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
# This process keeps plain per-thread connections (health-checked), not production's
# pool: its tests terminate and restart the backends under it, and count each read
# thread's own connection. The processes it starts (Daphne, the web command, Celery)
# get production's default: tests.processes.subprocess_env leaves this out again.
if "DATABASE_POOL" not in os.environ:
    os.environ["DATABASE_POOL"] = "0"
    os.environ["QUIKDAY_TEST_PROCESS_ONLY"] = "DATABASE_POOL"

# pytest-xdist (`-n N`): each worker ("gw0", "gw1"…) is a session of its own, started
# with the controller's environment. pytest-django gives it a test database of its own
# (test_<name>_gw0…); here it also gets a Redis db, a Celery queue and a metrics directory
# of its own, so that no worker sees another's groups, tasks, fixed keys or gauges.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") else 0
_METRICS_PREFIX = "quikday-test-metrics-"


def worker_redis_url(url: str) -> str:
    """``url`` moved to the db WORKER_INDEX places after its own (db 2 → 2, 3, 4 for gw0-gw2)."""
    parsed = urlparse(url)
    db = int(parsed.path.strip("/") or 0) + WORKER_INDEX
    return parsed._replace(path=f"/{db}").geturl()


# Once per worker: a pytest that a test starts inherits the worker's environment, already moved.
if WORKER and os.environ.get("QUIKDAY_TEST_WORKER") != WORKER:
    os.environ["QUIKDAY_TEST_WORKER"] = WORKER
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        if os.environ.get(name):
            os.environ[name] = worker_redis_url(os.environ[name])
    if os.environ.get("REALTIME_REDIS_URLS"):
        shards = os.environ["REALTIME_REDIS_URLS"].split(",")
        os.environ["REALTIME_REDIS_URLS"] = ",".join(worker_redis_url(url.strip()) for url in shards)
    if "CELERY_QUEUE" in os.environ:
        os.environ["CELERY_QUEUE"] += f"-{WORKER}"
    if os.path.basename(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")).startswith(_METRICS_PREFIX):
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]  # the controller's: it removes it at its end
# Failed publishes are retried in the background; keep that within a test or two.
os.environ.setdefault("REALTIME_PUBLISH_RETRY_SECONDS", "10")
# A queue of this session's own, so nothing left in Redis by another run is executed here.
os.environ.setdefault("CELERY_QUEUE", f"test-{uuid.uuid4().hex[:8]}")

# prometheus-client's multiprocess files of this session (and of the processes it
# starts, unless a test gives them a directory of their own), removed at the end.
# Only the process that made the directory removes it: a pytest a test starts inherits it.
CREATED_METRICS_DIR = None
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    CREATED_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_METRICS_PREFIX)

POSTGRES_UP = urlparse(os.environ["DATABASE_URL"]).scheme.startswith("postgres") and _answers(
    os.environ["DATABASE_URL"], 5432
)
# An empty REDIS_URL is this session's "no Redis" (below), inherited by its xdist workers.
REDIS_UP = bool(os.environ["REDIS_URL"]) and _answers(os.environ["REDIS_URL"], 6379)
MISSING = [name for name, up in (("PostgreSQL", POSTGRES_UP), ("Redis", REDIS_UP)) if not up]

if not IN_CI:
    if not POSTGRES_UP:
        os.environ["DATABASE_URL"] = "sqlite:///:memory:"
    if not REDIS_UP:
        # Empty, not unset: an xdist worker (and a process a test starts) inherits this
        # environment, and an unset REDIS_URL would send it to the default Redis above.
        os.environ["REDIS_URL"] = ""
        os.environ["RUNS_EXECUTOR"] = "inline"


def pytest_configure(config):
    if IN_CI and MISSING:
        raise pytest.UsageError(f"CI=true but {' and '.join(MISSING)} does not answer; start it first")
    if WORKER and REDIS_UP:
        import redis

        try:
            redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
        except redis.ResponseError as error:  # "DB index is out of range": fewer dbs than workers
            raise pytest.UsageError(
                f"{WORKER} uses {os.environ['REDIS_URL']} (REDIS_URL's db + {WORKER_INDEX}): {error}"
            ) from None


# The files that take longest (each starts real processes: servers, workers, Chromium, pip),
# longest first. Under xdist the suite is spread by file (pytest.ini: --dist loadfile, so a
# module's Daphne or Chromium starts once, not once per worker), and files are handed out in
# collection order: the long ones start first instead of ending the run on one worker alone.
HEAVIEST_FIRST = (
    "tests/test_db_connections.py",
    "tests/scenarios/test_database_faults_e2e.py",
    "tests/runs/test_tasks_e2e.py",
    "tests/scenarios/test_hostile_sockets_daphne.py",
    "tests/scenarios/test_protocol_daphne.py",
    "tests/test_readme.py",
    "tests/test_dependencies.py",
    "tests/scenarios/test_worker_sigterm.py",
    "tests/realtime/runlist/test_user_stream.py",
    "tests/runs/test_api_e2e.py",
    "tests/scenarios/test_redis_outage_e2e.py",
    "tests/runs/test_redis_restart_e2e.py",
    "tests/web/test_ui_browser.py",
    "tests/web/test_timeline_browser.py",
    "tests/web/test_browser.py",
    "tests/server/test_web_command.py",
    "tests/realtime/events/test_shards.py",
    "tests/scenarios/test_e2e.py",
    "tests/scenarios/test_embedded.py",
    "tests/test_deploy.py",
    "tests/runs/test_schemathesis_e2e.py",
    "tests/web/test_cross_origin_browser.py",
    "tests/scenarios/test_failover_e2e.py",
)


def _weight(item) -> int:
    path = item.nodeid.partition("::")[0]
    return HEAVIEST_FIRST.index(path) if path in HEAVIEST_FIRST else len(HEAVIEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_weight)  # stable: each file's tests keep their order
    for item in items:
        if "postgres" in item.keywords and not POSTGRES_UP:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (not answering at DATABASE_URL)"))
        if "redis" in item.keywords and not REDIS_UP:
            item.add_marker(pytest.mark.skip(reason="needs Redis (not answering at REDIS_URL)"))


# How long the interpreter may take to exit after the session (env: QUIKDAY_TEST_EXIT_GRACE).
EXIT_GRACE_SECONDS = float(os.environ.get("QUIKDAY_TEST_EXIT_GRACE", "30"))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process if a thread outlives the session (a test timed out while it waited).

    pytest-timeout's signal method fails a hung test in the main thread, but a
    worker thread it was waiting on (sync_to_async, a read thread) stays stuck,
    and Python joins those threads at exit: the run would hang after its summary.
    A daemon timer ends the process with the session's status, after printing
    the stuck threads' stacks, if the normal exit has not happened by then.
    """
    worker = hasattr(config, "workerinput")
    if worker and "observability.reporter" in sys.modules:
        # An xdist worker waits, idle, for the controller to end it: the reporter a test started
        # (the observability tests; one served through quikday.asgi.application, as bench/legacy.py's
        # tests do) would go on logging to pytest's closed capture.
        sys.modules["observability.reporter"].stop()
    if CREATED_METRICS_DIR:
        shutil.rmtree(CREATED_METRICS_DIR, ignore_errors=True)  # this session's metrics
    if worker:
        return  # the controller kills a worker not gone 10 s after it asks; its own exit has the watchdog
    status = getattr(config, "_quikday_exitstatus", 1) or 1

    def force_exit() -> None:
        sys.stderr.write(f"\nthreads still running {EXIT_GRACE_SECONDS:g}s after the session; ending it\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(status)

    watchdog = threading.Timer(EXIT_GRACE_SECONDS, force_exit)
    watchdog.daemon = True
    watchdog.start()


def pytest_sessionfinish(session, exitstatus):
    session.config._quikday_exitstatus = int(exitstatus)
