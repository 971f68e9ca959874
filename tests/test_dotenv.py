"""The checkout's .env (quikday/dotenv.py): `make run`'s settings for every manage.py command.

Each command runs as a person types it in the checkout: no DEBUG and no
SECRET_KEY in the environment. The file is named by QUIKDAY_ENV_FILE so that
no test touches the checkout's own .env.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from quikday import dotenv
from tests.processes import ROOT

# What the test process itself has and a person's shell would not.
_NOT_INHERITED = ("DEBUG", "SECRET_KEY", "STATIC_MANIFEST", "DATABASE_URL", "REDIS_URL", "QUIKDAY_ENV_FILE")


def shell_env(env_file: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(
        {"QUIKDAY_ENV_FILE": str(env_file), "DATABASE_URL": f"sqlite:///{env_file.parent / 'db.sqlite3'}"}
    )
    env.update(overrides)
    return env


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_make_runs_env_file_lets_every_manage_py_command_run(tmp_path):
    env_file = tmp_path / ".env"
    env = shell_env(env_file)
    written = run("-m", "quikday.dotenv", env=env)  # what `make run` does first
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds a secret
    content = env_file.read_text()
    assert "DEBUG=1" in content and "SECRET_KEY=" in content

    assert run("-m", "quikday.dotenv", env=env).returncode == 0
    assert env_file.read_text() == content  # written once: sessions and tokens outlive a restart

    for command in (
        ["migrate", "--noinput"],
        ["createsuperuser", "--noinput", "--username", "ada", "--email", "ada@example.com"],
        ["drf_create_token", "ada"],
    ):
        result = run("manage.py", *command, env={**env, "DJANGO_SUPERUSER_PASSWORD": "a long pass phrase"})
        assert result.returncode == 0, result.stdout + result.stderr
    assert "Generated token" in result.stdout


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nSECRET_KEY=the-file-s-key\nLOG_LEVEL=WARNING\n")
    code = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY, settings.LOG_LEVEL)"
    env = shell_env(env_file, DEBUG="0", SECRET_KEY="the-environment-s-key", SECURE_SSL_REDIRECT="0")
    env.pop("LOG_LEVEL", None)
    result = run("manage.py", "shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "the-environment-s-key", "WARNING"]


def test_without_an_env_file_debug_is_off_and_secret_key_required(tmp_path):
    # A deployment: the Procfile's commands in a checkout with no .env.
    result = run("manage.py", "check", env=shell_env(tmp_path / ".env"))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr and "required when DEBUG is off" in result.stderr


def test_the_suite_reads_no_env_file():
    from django.conf import settings

    assert dotenv.env_file() is None
    assert not settings.DEBUG and settings.SECRET_KEY == os.environ["SECRET_KEY"]


def test_parse_reads_names_values_comments_export_and_quotes():
    text = "# a comment\n\nDEBUG=1\nexport SECRET_KEY = 'with spaces'\nEMPTY=\nQUOTED=\"a#b\"\n"
    assert dotenv.parse(text, ".env") == {
        "DEBUG": "1",
        "SECRET_KEY": "with spaces",
        "EMPTY": "",
        "QUOTED": "a#b",
    }


@pytest.mark.parametrize("line", ["just words", "=value", "TWO WORDS=x"])
def test_parse_names_the_file_and_line_of_a_malformed_one(line):
    with pytest.raises(ImproperlyConfigured, match=r"^\.env:2: expected NAME=value"):
        dotenv.parse(f"DEBUG=1\n{line}\n", ".env")
