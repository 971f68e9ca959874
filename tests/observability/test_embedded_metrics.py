"""`make run` (embedded: one process, SQLite, no Redis): /metrics in single-process mode and
the Realtime page reading the process's own snapshot."""

import asyncio
import json
import re

import pytest
import websockets

from tests.observability.support import samples, value
from tests.observability.test_e2e import METRICS_TOKEN, _get, staff_login, until
from tests.scenarios.test_embedded import http, make_run

pytestmark = [pytest.mark.e2e]


async def test_embedded_metrics_and_the_realtime_page(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")  # embedded: prometheus-client's single-process mode
    with make_run(tmp_path, METRICS_TOKEN=METRICS_TOKEN, OBSERVABILITY_REPORT_INTERVAL="0.2") as (
        server,
        token,
    ):
        gate = tmp_path / "go"  # the run waits at its first step until the page has listed it
        password = re.search(r"Password:\s+(\S+)", server.log()).group(1)
        steps = [{"tool": "gate", "args": {"path": str(gate)}}, {"tool": "echo", "args": {"n": 1}}]
        status, run = await asyncio.to_thread(
            http, "POST", f"{server.url}/api/runs/", token=token, body={"steps": steps}
        )
        assert status == 201
        staff = await asyncio.to_thread(staff_login, server, "admin", password)
        async with websockets.connect(
            f"{server.ws_url}/ws/runs/{run['id']}/?since=0",
            additional_headers={"Authorization": f"Token {token}"},
        ) as ws:

            def listed():
                _, body = _get(server, "/admin/realtime/status.json", staff)
                data = json.loads(body)
                return data if any(r["run_id"] == run["id"] for r in data["runs"]) else None

            page = await until(listed, "the run listed on the Realtime page")
            gate.touch()
            frames = [json.loads(message) async for message in ws]

        def all_counted():
            code, body = _get(server, "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert code == 200
            found = samples(body.decode())
            # The last event is counted just after its publish returns: maybe after the client has it.
            return found if value(found, "quikday_events_total") == len(frames) - 1 else None

        found = await until(all_counted, "every event but `connected` counted")
        log = server.log()
    assert frames[-1]["type"] == "run_completed" and ws.close_code == 1000
    assert page["database"] == "ok" and page["channel_layer"] == "in-memory (this process)"
    assert value(found, "quikday_websocket_connects_total", mode="push") == 1
    assert value(found, "quikday_events_total", type="run_completed") == 1
    assert value(found, "quikday_runs", status="succeeded") == 1
    assert value(found, "process_resident_memory_bytes") > 0  # single-process mode's own collectors
    assert "🔌 Quik.day Realtime, embedded mode" in log
    served = log.split("exec .venv/bin/daphne", 1)[1]  # after make run's own one-time printout
    assert token not in served and password not in served
