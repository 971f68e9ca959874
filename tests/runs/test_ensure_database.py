"""manage.py ensure_database, which `make dev` runs before migrating; and `make help`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.postgres


def _server_url() -> str:
    from django.db import connection

    conf = connection.settings_dict
    return f"postgres://{conf['USER'] or 'postgres'}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}"


def _exists(server: str, name: str) -> bool:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def ensure_database(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "manage.py", "ensure_database"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_creates_a_missing_database_once():
    server = _server_url()
    name = f"quikday_ensure_{uuid.uuid4().hex[:8]}"
    try:
        first = ensure_database(f"{server}/{name}")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"Created the database {name!r}."
        assert _exists(server, name)
        second = ensure_database(f"{server}/{name}")
        assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_make_dev_creates_the_database_before_migrating():
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/bin/.installed", "dev"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    commands = dry_run.stdout.splitlines()
    assert dry_run.returncode == 0, dry_run.stderr
    ensure = next(i for i, line in enumerate(commands) if "manage.py ensure_database" in line)
    migrate = next(i for i, line in enumerate(commands) if "manage.py migrate" in line)
    assert ensure < migrate


def test_make_alone_lists_the_targets():
    result = subprocess.run(
        ["make", "--no-print-directory"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    listed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("  make ")]
    assert {"run", "test", "dev", "help", "lint"} <= set(listed)
