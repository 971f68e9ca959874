"""A step taken over by a new worker is an event (issue 21 #8): the Procfile's worker, a real Daphne.

The first worker (main process and pool) is killed mid-step; the take-over sweep
dispatches the run again and a second worker executes the interrupted step as
its attempt 2. Before, that attempt moved the step's started_at without an
event: a watcher's snapshot plus events no longer equalled GET /api/runs/<id>/.
"""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from runs import services, takeover
from runs.models import Run
from tests.processes import procfile_worker, subprocess_env
from tests.realtime.support import apply_events
from tests.scenarios.test_e2e import read_frames
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 60.0  # a bound on waiting for what must happen, not a timing assertion


def step_running(run_id, index):
    return Run.objects.get(pk=run_id).steps.filter(index=index, status="running").exists()


def taken_over(run_id):
    return run_id in takeover.take_over_runs().taken_over


def test_a_taken_over_step_is_a_step_retried_event(daphne_process, api, user, token):
    env = subprocess_env()
    run = services.run_create(
        owner=user,
        steps=[{"tool": "wait", "args": {"seconds": 5}}, {"tool": "echo", "args": {"after": "wait"}}],
    )

    async def scenario():
        with procfile_worker(env, extra_args=("-n", "first@%h")) as first:
            await asyncio.to_thread(wait_for, lambda: step_running(run.id, 0), what="step 0 to start")
            url = f"{daphne_process.ws_url}/ws/runs/{run.id}/"
            ws = await connect(url, additional_headers={"Authorization": f"Token {token}"}, open_timeout=WAIT)
            connected = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            first.kill()  # main process and pool: nothing is left to requeue the message
        with procfile_worker(env, extra_args=("-n", "second@%h")) as second:
            await asyncio.to_thread(wait_for, lambda: taken_over(run.id), what="the take-over sweep")
            frames: list[dict] = []
            code = await read_frames(ws, frames)
            log = second.log()
        return connected, frames, code, log, (first.node_name, second.node_name)

    connected, frames, code, log, (first, second) = asyncio.run(scenario())

    assert connected["type"] == "connected"
    assert first != second
    # Each attempt names the worker executing it: the killed one, then the one that took over.
    assert [(s["attempts"], s["worker"]) for s in connected["payload"]["run"]["steps"]] == [(1, first)]
    detail = api.get(f"/api/runs/{run.id}/").json()
    assert detail["status"] == "succeeded", detail
    retried, *_ = detail["steps"]
    assert (retried["attempts"], retried["worker"]) == (2, second)
    assert detail["steps"][1]["worker"] == second
    assert retried["started_at"] > connected["payload"]["run"]["steps"][0]["started_at"]
    assert [(f["type"], f["payload"].get("step", {}).get("index")) for f in frames] == [
        ("step_retried", 0),
        ("step_succeeded", 0),
        ("step_started", 1),
        ("step_succeeded", 1),
        ("run_completed", None),
    ]
    assert frames[0]["payload"] == {
        "step": {**retried, "status": "running", "output": None, "finished_at": None}
    }
    assert [f["seq"] for f in frames] == list(range(connected["seq"] + 1, connected["seq"] + 6))
    assert code == 1000
    assert apply_events(connected["payload"]["run"], frames) == detail
    assert " ERROR" not in log and "Traceback" not in log, log
