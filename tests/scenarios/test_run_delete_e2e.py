"""Staff deletes a processing run in the admin (issue 21 #7): the Procfile's worker, a real Daphne.

Before, its watchers hung with no frame and no close, and the worker logged an
ERROR (``DoesNotExist``) when its step finished. Now every socket watching it
gets a last ``run_deleted`` frame and the close 4404, the run lists drop it
(``run_deleted`` on /ws/runs/), and the worker stops quietly.
"""

import asyncio
import json

import pytest
from django.test import Client
from websockets.asyncio.client import connect

from runs import services
from runs.models import Run
from tests.processes import daphne_server, procfile_worker, subprocess_env
from tests.scenarios.test_e2e import read_frames
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 60.0  # a bound on waiting for what must happen, not a timing assertion
PLAN = [{"tool": "wait", "args": {"seconds": 5}}, {"tool": "echo", "args": {"after": "wait"}}]


def step_running(run_id, index):
    return Run.objects.filter(pk=run_id, steps__index=index, steps__status="running").exists()


def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


async def open_watcher(server, path, token):
    ws = await connect(
        f"{server.ws_url}{path}", additional_headers={"Authorization": f"Token {token}"}, open_timeout=WAIT
    )
    connected = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert connected["type"] == "connected", connected
    return ws, connected


async def list_frame_for(ws, run_id: str) -> dict:
    """The run list's next frame about ``run_id`` that is not a summary."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            if frame["run_id"] == run_id and frame["type"] != "run_summary":
                return frame


def check_deleted(frames, code, *, seq) -> None:
    assert [(f["type"], f["seq"], f["payload"]) for f in frames] == [("run_deleted", seq, {})], frames
    assert code == 4404


def test_an_admin_delete_of_a_processing_run_ends_its_watchers_and_its_worker_quietly(
    daphne_process, user, token, staff_user
):
    run = services.run_create(owner=user, steps=PLAN)
    run_id = str(run.id)
    staff = admin_client(staff_user)

    async def scenario():
        with procfile_worker() as worker:
            await asyncio.to_thread(wait_for, lambda: step_running(run.id, 0), what="step 0 to start")
            watcher, connected = await open_watcher(daphne_process, f"/ws/runs/{run_id}/", token)
            runs_page, _ = await open_watcher(daphne_process, "/ws/runs/", token)
            response = await asyncio.to_thread(
                staff.post, f"/admin/runs/run/{run_id}/delete/", {"post": "yes"}
            )
            assert response.status_code == 302, response.content
            frames: list[dict] = []
            code = await read_frames(watcher, frames)
            listed = await list_frame_for(runs_page, run_id)
            await runs_page.close()
            await asyncio.to_thread(
                wait_for, lambda: "was deleted during execution" in worker.log(), what="the worker to stop"
            )
            return connected, frames, code, listed, worker.log()

    connected, frames, code, listed, log = asyncio.run(scenario())

    check_deleted(frames, code, seq=connected["seq"])
    assert (listed["type"], listed["seq"], listed["payload"]) == ("run_deleted", 0, {})
    assert not Run.objects.filter(pk=run_id).exists()
    assert " ERROR" not in log and "Traceback" not in log, log


def test_the_bulk_delete_action_ends_polling_watchers_too(user, token, staff_user):
    """Poll mode: nothing is published; the process's poller finds the run gone."""
    env = subprocess_env(REALTIME_MODE="poll", REALTIME_POLL_INTERVAL="0.5")
    runs = [services.run_create(owner=user, steps=PLAN) for _ in range(2)]
    staff = admin_client(staff_user)

    async def scenario():
        with daphne_server(env) as server, procfile_worker(env) as worker:
            await asyncio.to_thread(wait_for, lambda: step_running(runs[0].id, 0), what="step 0 to start")
            watchers = [await open_watcher(server, f"/ws/runs/{run.id}/", token) for run in runs]
            response = await asyncio.to_thread(
                staff.post,
                "/admin/runs/run/",
                {"action": "delete_selected", "_selected_action": [str(r.id) for r in runs], "post": "yes"},
            )
            assert response.status_code == 302, response.content
            ended = []
            for ws, connected in watchers:
                frames: list[dict] = []
                ended.append((connected, frames, await read_frames(ws, frames)))
            await asyncio.to_thread(
                wait_for, lambda: "was deleted during execution" in worker.log(), what="the worker to stop"
            )
            return ended, worker.log(), server.log()

    ended, worker_log, server_log = asyncio.run(scenario())

    for connected, frames, code in ended:
        check_deleted(frames, code, seq=connected["seq"])
    assert not Run.objects.filter(pk__in=[r.id for r in runs]).exists()
    assert " ERROR" not in worker_log and "Traceback" not in worker_log, worker_log
    assert "Traceback" not in server_log, server_log
