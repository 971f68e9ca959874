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


os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
# Nothing is collected for tests: static files are served from the apps (see settings).
os.environ.setdefault("STATIC_MANIFEST", "0")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver,[::1]")
os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
# Failed publishes are retried in the background; keep that within a test or two.
os.environ.setdefault("REALTIME_PUBLISH_RETRY_SECONDS", "10")
# A queue of this session's own, so nothing left in Redis by another run is executed here.
os.environ.setdefault("CELERY_QUEUE", f"test-{uuid.uuid4().hex[:8]}")

# prometheus-client's multiprocess files of this session (and of the processes it
# starts, unless a test gives them a directory of their own), removed at the end.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="quikday-test-metrics-"))

POSTGRES_UP = urlparse(os.environ["DATABASE_URL"]).scheme.startswith("postgres") and _answers(
    os.environ["DATABASE_URL"], 5432
)
REDIS_UP = _answers(os.environ["REDIS_URL"], 6379)
MISSING = [name for name, up in (("PostgreSQL", POSTGRES_UP), ("Redis", REDIS_UP)) if not up]

if not IN_CI:
    if not POSTGRES_UP:
        os.environ["DATABASE_URL"] = "sqlite:///:memory:"
    if not REDIS_UP:
        os.environ.pop("REDIS_URL")
        os.environ["RUNS_EXECUTOR"] = "inline"


def pytest_configure(config):
    if IN_CI and MISSING:
        raise pytest.UsageError(f"CI=true but {' and '.join(MISSING)} does not answer; start it first")


def pytest_collection_modifyitems(config, items):
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
    if os.environ["PROMETHEUS_MULTIPROC_DIR"].startswith(tempfile.gettempdir() + "/quikday-test-metrics-"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)  # this session's metrics
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
