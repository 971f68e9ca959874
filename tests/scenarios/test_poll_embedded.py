"""REALTIME_MODE=poll runs the whole app with no Redis configured (SQLite, `make run`).

The server has no channel layer to speak of: the process's poller reads the
SQLite event log (the OR'ed-conditions form of the poll query) and every
watcher gets the same frames as push would send.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.scenarios.test_embedded import http, make_run, receive_all

pytestmark = [pytest.mark.e2e]


async def test_poll_mode_with_no_redis_streams_runs_to_many_watchers(tmp_path):
    gate = tmp_path / "open"
    with make_run(tmp_path, REALTIME_MODE="poll", REALTIME_POLL_INTERVAL="0.2") as (server, token):
        status, health = http("GET", f"{server.url}/healthz")
        assert status == 200 and health["redis"] == "not configured", health
        steps = [{"tool": "gate", "args": {"path": str(gate)}}, {"tool": "echo", "args": {"text": "a"}}]
        runs = []
        for _ in range(2):
            status, run = http("POST", f"{server.url}/api/runs/", token=token, body={"steps": steps})
            assert status == 201, run
            runs.append(run)

        headers = {"Authorization": f"Token {token}"}
        sockets = []
        for run in runs:
            for _ in range(2):
                ws = await websockets.connect(server.ws_url + run["ws_url"], additional_headers=headers)
                connected = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                assert connected["type"] == "connected" and connected["payload"]["mode"] == "poll"
                sockets.append((run, ws, connected))
        gate.touch()

        for run, ws, connected in sockets:
            frames = await receive_all(ws)
            assert ws.close_code == 1000
            assert frames[-1]["type"] == "run_completed"
            assert frames[-1]["payload"]["status"] == "succeeded"
            seqs = [connected["seq"], *[f["seq"] for f in frames]]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            status, page = http(
                "GET", f"{server.url}/api/runs/{run['id']}/events/?since={seqs[0]}", token=token
            )
            assert status == 200 and page["events"] == frames
        assert "Traceback" not in server.log()
