"""`make run` end to end: the embedded default, with nothing but Python.

Each test starts `make run` itself (venv check, migrate, ensure_admin, then the
same Daphne command) on a free port, a fresh SQLite file in a temporary folder
and no REDIS_URL, then talks to it as a person would: curl-like HTTP with the
token make run printed, and a `websockets` client.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets

from tests.processes import Server, _running, free_port

pytestmark = [pytest.mark.e2e]

# The test process's own service settings must not leak into the embedded server.
_NOT_INHERITED = {
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_QUEUE",
    "RUNS_EXECUTOR",
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "STATIC_MANIFEST",
    "SECURE_SSL_REDIRECT",
    "ALLOWED_HOSTS",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
}
STARTUP_TIMEOUT = 120.0


def make_run_env(tmp_path: Path, port: int, **env: str) -> dict[str, str]:
    """A person's shell in the checkout, for `make run` (or a command beside it) on ``tmp_path``'s files."""
    child_env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    child_env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            "RUNS_TOOL_MODULES": "tests.embedded_tools",
            "QUIKDAY_ENV_FILE": str(tmp_path / ".env"),  # not the checkout's own
            **env,
        }
    )
    return child_env


@contextmanager
def make_run(tmp_path: Path, **env: str) -> Iterator[tuple[Server, str]]:
    """`make run` on a fresh SQLite file; yields the server and the API token it printed."""
    port = free_port()
    server = Server(["make", "--no-print-directory", "run"], make_run_env(tmp_path, port, **env), port)
    with _running(server):
        server.wait_until(lambda: _healthy(server.url), STARTUP_TIMEOUT, "answering /healthz")
        found = re.search(r"API token:\s+(\w+)", server.log())
        assert found, server.log()
        yield server, found.group(1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def receive_all(ws) -> list[dict]:
    """Every frame until the server closes the socket."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=60)))
    except websockets.ConnectionClosed:
        return frames


async def test_make_run_streams_a_run_live_over_websockets(tmp_path):
    # One executor thread and a first run held at a gate: the watched run is
    # certainly still queued when the client connects, so every one of its
    # events reaches the client live, through the in-memory channel layer.
    # asyncio's debug mode makes any cross-thread use of the server loop (an
    # event sent on the wrong loop) raise instead of going unnoticed.
    gate = tmp_path / "open"
    with make_run(tmp_path, RUNS_INLINE_WORKERS="1", PYTHONASYNCIODEBUG="1") as (server, token):
        log = server.log()
        assert "embedded mode" in log and "InMemoryChannelLayer" in log and "inline" in log
        status, health = http("GET", f"{server.url}/healthz")
        assert (status, health) == (
            200,
            {"status": "ok", "database": "ok", "redis": "not configured", "mode": "embedded"},
        )

        status, blocker = http(
            "POST",
            f"{server.url}/api/runs/",
            token=token,
            body={"steps": [{"tool": "gate", "args": {"path": str(gate)}}]},
        )
        assert status == 201, blocker
        steps = [{"tool": "echo", "args": {"text": t}} for t in ("a", "b", "c")]
        status, run = http(
            "POST", f"{server.url}/api/runs/", token=token, body={"prompt": "demo", "steps": steps}
        )
        assert status == 201 and run["status"] == "queued", run

        headers = {"Authorization": f"Token {token}"}
        async with websockets.connect(server.ws_url + run["ws_url"], additional_headers=headers) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            assert connected["type"] == "connected" and connected["seq"] == 0
            assert connected["payload"]["mode"] == "push"
            assert connected["payload"]["run"]["status"] == "queued"
            gate.touch()
            frames = await receive_all(ws)
            assert ws.close_code == 1000

        assert [f["type"] for f in frames] == [
            "run_status",
            *["step_started", "step_succeeded"] * 3,
            "run_completed",
        ]
        assert [f["seq"] for f in frames] == list(range(1, 9))
        assert frames[0]["payload"]["status"] == "processing"
        assert [f["payload"]["step"]["index"] for f in frames[1:7]] == [0, 0, 1, 1, 2, 2]
        assert frames[-1]["payload"]["status"] == "succeeded"
        assert frames[-1]["payload"]["output"] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]

        # What was pushed is exactly what the log holds, and the API agrees.
        status, log_page = http("GET", f"{server.url}/api/runs/{run['id']}/events/?since=0", token=token)
        assert status == 200 and log_page["events"] == frames
        status, final = http("GET", f"{server.url}/api/runs/{run['id']}/", token=token)
        assert status == 200 and final["status"] == "succeeded"
        assert [s["status"] for s in final["steps"]] == ["succeeded"] * 3

        assert "failed" not in server.log()  # no publish failure, no failed run
        assert "Traceback" not in server.log()


async def test_make_run_serves_the_admin_and_its_css(tmp_path):
    with make_run(tmp_path) as (server, _token):
        with urllib.request.urlopen(f"{server.url}/admin/login/", timeout=10) as response:
            page = response.read().decode()
        css = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', page)
        assert css, page[:500]
        with urllib.request.urlopen(server.url + css.group(1), timeout=10) as response:
            assert response.status == 200 and "text/css" in response.headers["Content-Type"]
        assert "Password:" in server.log() and "generated" in server.log()
        assert f"{server.url}/admin/" in server.log()


async def test_concurrent_runs_and_watchers_share_one_sqlite_file(tmp_path):
    """Several runs executing in threads while clients watch: no lock errors, nothing lost."""
    with make_run(tmp_path, RUNS_INLINE_WORKERS="4") as (server, token):
        headers = {"Authorization": f"Token {token}"}
        steps = [{"tool": "echo", "args": {"n": n}} for n in range(5)]

        async def one_run() -> list[dict]:
            status, run = await asyncio.to_thread(
                http, "POST", f"{server.url}/api/runs/", token=token, body={"steps": steps}
            )
            assert status == 201, run
            async with websockets.connect(
                f"{server.ws_url}{run['ws_url']}?since=0", additional_headers=headers
            ) as ws:
                frames = await receive_all(ws)
                assert ws.close_code == 1000
            return frames

        results = await asyncio.gather(*(one_run() for _ in range(8)))
        for frames in results:
            assert frames[0]["type"] == "connected"
            events = frames[1:]
            # Resumed from 0: every event 1..N exactly once, whatever was live or backlog.
            assert [f["seq"] for f in events] == list(range(1, 13))
            assert events[-1]["type"] == "run_completed"
            assert events[-1]["payload"]["status"] == "succeeded"
        assert "database is locked" not in server.log()
        assert "Traceback" not in server.log()


def _daphne_pid(port: int) -> int:
    """The Daphne process `make run` started (make → make serve → daphne)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"daphne") for a in argv) and str(port).encode() in argv:
                return int(entry.name)
    raise LookupError(f"no daphne on port {port}")


async def test_a_stopped_server_exits_mid_run_and_the_next_start_resumes_the_run(tmp_path):
    gate = tmp_path / "open"
    steps = [
        {"tool": "echo", "args": {"n": 0}},
        {"tool": "gate", "args": {"path": str(gate)}},
        {"tool": "echo", "args": {"n": 2}},
    ]
    with make_run(tmp_path) as (server, token):
        status, run = http("POST", f"{server.url}/api/runs/", token=token, body={"steps": steps})
        assert status == 201, run
        url = f"{server.url}/api/runs/{run['id']}/"
        deadline = time.monotonic() + 60
        while [s["status"] for s in http("GET", url, token=token)[1]["steps"]] != ["succeeded", "running"]:
            assert time.monotonic() < deadline, "the run never reached its gate"
            await asyncio.sleep(0.1)
        # SIGTERM mid-step: the server stops without waiting for the run (make run ends with it).
        first_pid = _daphne_pid(server.port)
        os.kill(first_pid, signal.SIGTERM)
        server.popen.wait(timeout=60)

    with make_run(tmp_path) as (server, token):
        second_pid = _daphne_pid(server.port)
        headers = {"Authorization": f"Token {token}"}
        async with websockets.connect(
            f"{server.ws_url}{run['ws_url']}?since=0", additional_headers=headers
        ) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            assert connected["type"] == "connected" and connected["payload"]["recovered"] is True
            gate.touch()
            frames = await receive_all(ws)
            assert ws.close_code == 1000
        assert [f["seq"] for f in frames] == list(range(1, 10))
        # The gate step the stop interrupted runs again: its second attempt is an event of its own.
        assert [f["type"] for f in frames] == [
            "run_status",
            *["step_started", "step_succeeded"],
            *["step_started", "step_retried", "step_succeeded"],
            *["step_started", "step_succeeded"],
            "run_completed",
        ]
        retried = frames[4]["payload"]["step"]
        assert (retried["index"], retried["status"], retried["attempts"]) == (1, "running", 2)
        # Each attempt names the web process executing it: the stopped server's, then the next one's.
        host = socket.gethostname()
        workers = [(f["payload"]["step"]["index"], f["payload"]["step"]["worker"]) for f in frames[1:-1]]
        assert workers == [
            *[(0, f"web:{host}:{first_pid}")] * 2,
            (1, f"web:{host}:{first_pid}"),
            *[(1, f"web:{host}:{second_pid}")] * 2,
            *[(2, f"web:{host}:{second_pid}")] * 2,
        ]
        assert frames[-1]["payload"]["status"] == "succeeded"
        assert frames[-1]["payload"]["output"] == [{"n": 0}, {"opened": str(gate)}, {"n": 2}]
        assert "resuming run" in server.log()
