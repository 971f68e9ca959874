"""The one-click deploy files: app.json (Heroku), render.yaml (Render), .python-version.

Each platform runs the processes the Procfile declares; these files say the same
thing in each platform's words. The tests read them as the platform would and
hold them to the Procfile: a command changed in one place and not the others
fails here, not on the platform.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from django.urls import resolve

from tests.processes import ROOT
from tests.test_deploy import manage, procfile, production_env

PROCESSES = ("web", "worker", "beat")


def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text())


def render_yaml() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def render_services(kind: str | None = None) -> dict[str, dict]:
    services = render_yaml()["services"]
    return {s["name"]: s for s in services if kind is None or s["type"] == kind}


def render_process(process: str) -> dict:
    """The Render service that runs the Procfile's ``process``, found by its start command."""
    command = procfile()[process]
    found = [s for s in render_services().values() if s.get("startCommand") == command]
    assert len(found) == 1, f"exactly one Render service runs the Procfile's {process}: {command}"
    return found[0]


# --- .python-version -------------------------------------------------------------------


def test_python_version_is_the_form_buildpacks_read_and_runtime_txt_is_gone():
    text = (ROOT / ".python-version").read_text()
    # Heroku's and Render's Python buildpacks take "3.N" (the newest patch release of 3.N);
    # runtime.txt is deprecated, and Heroku reads it first when both exist.
    assert re.fullmatch(r"3\.\d+\n?", text), text
    assert text.strip() == f"{sys.version_info.major}.{sys.version_info.minor}", (
        "the version the suite runs on"
    )
    assert not (ROOT / "runtime.txt").exists()


# --- app.json (Heroku) -----------------------------------------------------------------


def test_app_json_runs_the_procfiles_processes_with_postgres_and_redis():
    app = app_json()
    assert set(app["formation"]) == set(PROCESSES)
    assert app["formation"]["beat"]["quantity"] == 1, "exactly one beat"
    assert all(app["formation"][p]["quantity"] >= 1 for p in PROCESSES)
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in app["addons"]]
    assert any(plan.startswith("heroku-postgresql") for plan in plans)
    assert any(plan.startswith("heroku-redis") for plan in plans)
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    # Heroku takes the commands, the release phase's migrate included, from the Procfile itself.
    assert "release" in procfile()


def test_app_json_generates_the_secret_and_its_env_passes_the_deploy_check(tmp_path):
    env = app_json()["env"]
    assert env["SECRET_KEY"]["generator"] == "secret"
    values = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    assert "DEBUG" not in values, "production runs with DEBUG off"
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **values),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_app_json_postdeploy_is_a_management_command_that_exists():
    from django.core.management import get_commands

    postdeploy = app_json()["scripts"]["postdeploy"]
    command = re.match(r"python manage\.py (\S+)", postdeploy)
    assert command and command.group(1) in get_commands(), postdeploy


# --- render.yaml (Render) --------------------------------------------------------------


@pytest.mark.parametrize("process", PROCESSES)
def test_render_runs_each_procfile_process_with_its_exact_command(process):
    service = render_process(process)
    assert service["type"] == ("web" if process == "web" else "worker")
    assert service["runtime"] == "python"
    # What a buildpack does: requirements.txt alone.
    assert service["buildCommand"] == "pip install -r requirements.txt"


def test_render_migrates_before_deploying_with_the_procfiles_release_command():
    assert render_process("web")["preDeployCommand"] == procfile()["release"]


def test_render_health_check_is_healthz():
    path = render_process("web")["healthCheckPath"]
    assert path == "/healthz"
    assert resolve(path).func.__name__ == "healthz"


def test_render_key_value_never_evicts_and_is_private():
    (key_value,) = render_services("keyvalue").values()
    assert key_value["maxmemoryPolicy"] == "noeviction", "an evicted key is a lost Celery message"
    assert key_value["ipAllowList"] == [], "reachable only over Render's private network"


def test_render_wires_every_process_to_the_one_database_key_value_and_settings():
    blueprint = render_yaml()
    (database,) = blueprint["databases"]
    (key_value,) = render_services("keyvalue")
    (group,) = blueprint["envVarGroups"]
    assert {"key": "SECRET_KEY", "generateValue": True} in group["envVars"]
    for process in PROCESSES:
        env = render_process(process)["envVars"]
        assert {"fromGroup": group["name"]} in env
        by_key = {entry["key"]: entry for entry in env if "key" in entry}
        assert by_key["DATABASE_URL"]["fromDatabase"] == {
            "name": database["name"],
            "property": "connectionString",
        }
        assert by_key["REDIS_URL"]["fromService"] == {
            "type": "keyvalue",
            "name": key_value,
            "property": "connectionString",
        }
    beats = [s for s in render_services("worker").values() if " beat " in s["startCommand"]]
    assert len(beats) == 1, "exactly one beat"


# --- No drift between them ---------------------------------------------------------------


# Values that differ by platform: its host names, and Heroku's self-signed Redis certificate.
PLATFORM_SPECIFIC = {"ALLOWED_HOSTS", "REDIS_SSL_CERT_REQS"}


def test_heroku_and_render_set_the_same_values():
    heroku = {name: spec["value"] for name, spec in app_json()["env"].items() if "value" in spec}
    (group,) = render_yaml()["envVarGroups"]
    render = {entry["key"]: entry["value"] for entry in group["envVars"] if "value" in entry}
    assert {"WEB_CONCURRENCY", "WORKER_CONCURRENCY"} <= set(heroku) & set(render)
    assert {k: v for k, v in heroku.items() if k not in PLATFORM_SPECIFIC} == {
        k: v for k, v in render.items() if k not in PLATFORM_SPECIFIC
    }


def test_heroku_redis_tls_urls_accept_its_self_signed_certificate():
    """Heroku Key-Value Store's REDIS_URL is rediss:// with a certificate no CA signed: app.json's
    REDIS_SSL_CERT_REQS makes every Redis client of the app (broker, channel layer, /healthz) accept it."""
    value = app_json()["env"]["REDIS_SSL_CERT_REQS"]["value"]
    script = (
        "import json; from quikday import settings as s;"
        "print(json.dumps([s.REDIS_URL, s.CELERY_BROKER_URL, s.REALTIME_REDIS_URLS]))"
    )
    env = production_env(
        REDIS_URL="rediss://:secret@redis.example.com:6380",
        REALTIME_REDIS_URLS="rediss://a.example.com:6380/0?x=1,redis://b.example.com/0",
        REDIS_SSL_CERT_REQS=value,
        DATABASE_URL="sqlite:///:memory:",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "rediss://:secret@redis.example.com:6380?ssl_cert_reqs=none",
        "rediss://:secret@redis.example.com:6380?ssl_cert_reqs=none",
        ["rediss://a.example.com:6380/0?x=1&ssl_cert_reqs=none", "redis://b.example.com/0"],
    ]
    import redis

    pool = redis.Redis.from_url(json.loads(done.stdout)[0]).connection_pool
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"  # redis-py reads it from the URL


def test_readme_lists_the_deploy_files():
    readme = (ROOT / "README.md").read_text()
    for name in ("Procfile", "app.json", "render.yaml", ".python-version"):
        assert f"`{name}`" in readme, name
