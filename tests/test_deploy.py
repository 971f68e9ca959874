"""The production shape: settings from the environment, the Procfile, /healthz, static files.

The Procfile test starts the web command exactly as a platform would (PORT in
the environment, `sh -c`), after the release command, against the test
database and Redis, with DEBUG off and static files collected.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ROOT, Server, _running, free_port, subprocess_env

BIN = Path(sys.executable).parent
PRODUCTION_SECRET = secrets.token_urlsafe(50)


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def production_env(**overrides: str) -> dict[str, str]:
    """A platform's environment: DEBUG off, a real secret, the venv's tools on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "STATIC_MANIFEST")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "SECRET_KEY": PRODUCTION_SECRET,
            "ALLOWED_HOSTS": "quikday.example.com,127.0.0.1",
            "SECURE_SSL_REDIRECT": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# --- Settings -------------------------------------------------------------------------


def test_production_settings_without_secret_key_refuse_to_start(tmp_path):
    env = production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    del env["SECRET_KEY"]
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "required when DEBUG is off" in result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_malformed_setting_stops_start_up_with_its_name(tmp_path):
    env = production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DATABASE_POOL="maybe")
    result = manage("check", env=env)
    assert result.returncode != 0 and "DATABASE_POOL must be a boolean" in result.stderr


# --- The Procfile ---------------------------------------------------------------------


def test_procfile_declares_release_web_worker_and_beat():
    entries = procfile()
    assert set(entries) == {"release", "web", "worker", "beat"}
    assert "manage.py migrate" in entries["release"]
    assert re.search(
        r"exec python -m server\.web_command --interface 0\.0\.0\.0 --port \$PORT "
        r"--backlog \$\{WEB_LISTEN_BACKLOG:-2048\} -- --proxy-headers quikday\.asgi:application$",
        entries["web"],
    )
    # SIGTERM is a cold shutdown after a soft one: running runs are handed back within the platform's grace.
    assert entries["worker"].startswith("REMAP_SIGTERM=SIGQUIT celery -A quikday worker")
    assert entries["beat"].startswith("celery -A quikday beat")


def test_beat_schedules_only_tasks_that_exist():
    from django.conf import settings

    from quikday.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry


def _get(url: str, **headers: str):
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        response = opener.open(request, timeout=10)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
    with response:
        return response.status, response.headers, response.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_procfile_web_command_serves_healthz_admin_and_its_css(tmp_path):
    port = free_port()
    base = subprocess_env()
    env = production_env(
        DATABASE_URL=base["DATABASE_URL"],
        REDIS_URL=base["REDIS_URL"],
        CELERY_QUEUE=base["CELERY_QUEUE"],
        STATIC_ROOT=str(tmp_path / "static"),
        PORT=str(port),
        WEB_CONCURRENCY="2",
    )
    entries = procfile()
    release = subprocess.run(
        ["sh", "-c", entries["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stdout + release.stderr

    server = Server(["sh", "-c", entries["web"]], env, port)
    with _running(server):
        # The port answers as soon as the web command binds it; each Daphne says when it serves.
        server.wait_until(lambda: server.log().count("Listening on TCP address") == 2, 120, "listening")
        assert "with 2 Daphne processes" in server.log()
        # A platform's probe: plain HTTP, no proxy headers; exempt from the HTTPS redirect.
        status, _, body = _get(f"{server.url}/healthz")
        assert status == 200, body
        assert json.loads(body) == {
            "status": "ok",
            "database": "ok",
            "redis": "ok",
            "broker": "ok",
            "channel_layer": ["ok"],
            "mode": "full stack",
        }
        assert "full stack mode" in server.log() and "RedisPubSubChannelLayer" in server.log()

        # Everything else is HTTPS-only: plain HTTP is redirected ...
        status, headers, _ = _get(f"{server.url}/admin/login/")
        assert status == 301 and headers["Location"].startswith("https://")
        # ... and behind the platform's TLS proxy the admin answers, with HSTS.
        status, headers, body = _get(f"{server.url}/admin/login/", **{"X-Forwarded-Proto": "https"})
        assert status == 200
        assert "max-age=" in headers["Strict-Transport-Security"]
        css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', body.decode())
        assert css, "the admin links hashed (collected) static files"
        status, headers, body = _get(server.url + css.group(1), **{"X-Forwarded-Proto": "https"})
        assert status == 200 and headers["Content-Type"].startswith("text/css") and b"body" in body
        assert "immutable" in headers["Cache-Control"]
        status, headers, _ = _get(
            f"{server.url}/static/admin/css/base.css",
            **{"X-Forwarded-Proto": "https", "Accept-Encoding": "gzip"},
        )
        assert status == 200 and headers["Content-Encoding"] == "gzip"


def test_make_run_and_make_test_are_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert shlex.split((ROOT / ".python-version").read_text())[0] == "3.11"
