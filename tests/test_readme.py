"""README's examples, run exactly as written against `make run`, so that README cannot drift.

The curl block of "Try it with curl" and the shell block of "Watch a run live
over a WebSocket" are taken from README.md by their fenced blocks and run, one
after the other, by bash in the checkout — as a person pastes them into one
shell — with the environment a person has after `make run` (its PORT; the
test's own SQLite file and .env stand for the checkout's).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.processes import ROOT
from tests.scenarios.test_embedded import make_run, make_run_env

pytestmark = [pytest.mark.e2e]

README = ROOT / "README.md"


def shell_block(section: str) -> str:
    """The first ```sh block after the heading ``## <section>``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    found = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M).search(text, start)
    assert found, f"no ```sh block in README's {section!r}"
    return found.group(1)


def json_documents(text: str, count: int) -> tuple[list, str]:
    """The first ``count`` JSON documents printed one after another, and the text after them."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    for _ in range(count):
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents, text[position:]


def test_readme_curl_and_websocket_examples_run_as_written(tmp_path):
    curl_block = shell_block("Try it with curl")
    websocket_block = shell_block("Watch a run live over a WebSocket")
    with make_run(tmp_path) as (server, printed_token):
        env = make_run_env(tmp_path, server.port)
        result = subprocess.run(
            ["bash", "-e", "-u", "-c", f"{curl_block}\n{websocket_block}\necho token $TOKEN"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""

    # Each curl command prints one JSON body.
    (run, cancel, runs, tools, events, ticket, health), rest = json_documents(result.stdout, 7)
    assert run["status"] == "succeeded" and run["prompt"] == "say hi"
    assert [step["output"] for step in run["steps"]] == [{"text": "one"}, {"text": "two"}, {"text": "three"}]
    assert cancel == {
        "error": "conflict",
        "message": "the run has already succeeded; it cannot be cancelled",
        "status": "succeeded",
    }
    assert [listed["id"] for listed in runs["results"]] == [run["id"]]
    assert {"echo", "wait", "fail"} <= {entry["name"] for entry in tools}
    assert [(event["seq"], event["type"]) for event in events["events"]] == [
        (7, "step_succeeded"),
        (8, "run_completed"),
    ]
    assert set(ticket) == {"ticket", "expires_at"}
    assert (health["status"], health["database"], health["redis"]) == ("ok", "ok", "not configured")

    # The WebSocket example: `connected`, then every event of its run once, in order, then 1000.
    lines = rest.strip().splitlines()
    assert lines[-1] == f"token {printed_token}"  # the token line gives what make run printed
    assert lines[-2] == "closed 1000"
    frames = [line.split(" ", 2) for line in lines[:-2]]
    assert frames[0][1] == "connected"
    assert [(int(seq), kind) for seq, kind, _payload in frames[1:]] == [
        (1, "run_status"),
        (2, "step_started"),
        (3, "step_succeeded"),
        (4, "step_started"),
        (5, "step_succeeded"),
        (6, "step_started"),
        (7, "step_succeeded"),
        (8, "run_completed"),
    ]


def test_make_run_installs_every_package_the_websocket_example_imports(tmp_path):
    # This session's virtualenv has the tests' packages too; a newcomer's has only what
    # `make run` installs into a fresh one, which `make -n -B` lists without installing it.
    example = shell_block("Watch a run live over a WebSocket")
    imported = {
        name.strip() for line in re.findall(r"^import (.+)$", example, re.M) for name in line.split(",")
    }
    third_party = imported - sys.stdlib_module_names
    assert third_party == {"websockets"}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "run", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    installs = [line for line in dry_run.stdout.splitlines() if "pip install" in line]
    production = (ROOT / "requirements.txt").read_text().lower()
    for name in third_party:
        assert any(re.search(rf"\s{name}(\s|$)", line) for line in installs) or f"\n{name}==" in production
