"""End to end with real parts: Daphne and Celery worker processes, Redis, PostgreSQL,
and clients on the `websockets` library authenticating with ``Authorization: Token``.

Runs are created over HTTP while no worker runs yet, and the clients connect
before the worker starts: so the first frame is `connected` with seq 0 and
everything the worker does follows, in order — no timing involved.
"""

import asyncio
import json
import signal
import urllib.request
from contextlib import ExitStack

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.processes import celery_worker, daphne_server, subprocess_env
from tests.realtime.support import TS, check_frames

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 60.0  # a bound on waiting for something that must happen, not a timing assertion


def _create_run(server, token: str, steps: list[dict]) -> str:
    request = urllib.request.Request(
        f"{server.url}/api/runs/",
        data=json.dumps({"prompt": "e2e", "steps": steps}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        assert response.status == 201
        return json.loads(response.read())["id"]


async def create_run(server, token, steps) -> str:
    return await asyncio.to_thread(_create_run, server, token, steps)


def open_client(server, run_id: str, token: str, since: int | None = None):
    query = "" if since is None else f"?since={since}"
    return connect(
        f"{server.ws_url}/ws/runs/{run_id}/{query}",
        additional_headers={"Authorization": f"Token {token}"},
        open_timeout=WAIT,
    )


async def read_frames(ws, frames: list[dict]) -> int | None:
    """Append every frame to ``frames`` until the socket closes; return the close code."""
    try:
        async with asyncio.timeout(WAIT):
            async for message in ws:
                frames.append(json.loads(message))
    except ConnectionClosed:
        pass
    return ws.close_code


def check_run_of_three(frames: list[dict], run_id: str) -> None:
    assert frames[0]["type"] == "connected"
    assert (frames[0]["seq"], frames[0]["payload"]["recovered"]) == (0, False)
    assert frames[0]["payload"]["run"]["status"] == "queued"
    events = frames[1:]
    assert [(f["type"], f["payload"].get("status") or f["payload"]["step"]["index"]) for f in events] == [
        ("run_status", "processing"),
        ("step_started", 0),
        ("step_succeeded", 0),
        ("step_started", 1),
        ("step_succeeded", 1),
        ("step_started", 2),
        ("step_succeeded", 2),
        ("run_completed", "succeeded"),
    ]
    check_frames(events, run_id=run_id, first_seq=1)
    assert all(TS.match(f["ts"]) for f in frames)
    assert events[-1]["payload"]["output"] == [{"n": 0}, {"n": 1}, {"n": 2}]


THREE_ECHOES = [{"tool": "echo", "args": {"n": i}} for i in range(3)]


@pytest.mark.parametrize("layer", ["pubsub", "redis"])
async def test_a_run_of_three_steps_streams_to_a_websockets_client(token, layer):
    env = subprocess_env(REALTIME_CHANNEL_LAYER=layer)
    with daphne_server(env) as server:
        run_id = await create_run(server, token, THREE_ECHOES)
        frames: list[dict] = []
        async with open_client(server, run_id, token) as ws:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))  # connected, seq 0
            with celery_worker(env):
                code = await read_frames(ws, frames)
    assert code == 1000
    check_run_of_three(frames, run_id)


@pytest.mark.parametrize("layer", ["pubsub", "redis"])
async def test_clients_on_two_daphne_processes_receive_the_same_events(token, layer):
    env = subprocess_env(REALTIME_CHANNEL_LAYER=layer)
    with daphne_server(env) as first, daphne_server(env) as second:
        run_id = await create_run(first, token, THREE_ECHOES)
        frames: dict[int, list[dict]] = {first.port: [], second.port: []}
        async with open_client(first, run_id, token) as ws1, open_client(second, run_id, token) as ws2:
            for server, ws in ((first, ws1), (second, ws2)):
                frames[server.port].append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            with celery_worker(env):
                codes = await asyncio.gather(
                    read_frames(ws1, frames[first.port]), read_frames(ws2, frames[second.port])
                )
    assert codes == [1000, 1000]
    one, two = frames[first.port], frames[second.port]
    check_run_of_three(one, run_id)
    check_run_of_three(two, run_id)
    # The same events, byte for byte ("connected" is each server's own).
    assert one[1:] == two[1:]


async def test_a_client_resumes_across_a_daphne_restart(token):
    env = subprocess_env()
    steps = [{"tool": "wait", "args": {"seconds": 0.5}} for _ in range(6)]
    with ExitStack() as stack:
        server = stack.enter_context(daphne_server(env))
        port = server.port
        run_id = await create_run(server, token, steps)
        before: list[dict] = []
        async with open_client(server, run_id, token) as ws:
            before.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            stack.enter_context(celery_worker(env))
            async with asyncio.timeout(WAIT):
                while before[-1]["type"] != "step_succeeded":  # mid-run: the first step is done
                    before.append(json.loads(await ws.recv()))
            server.signal(signal.SIGKILL)
            server.popen.wait(timeout=WAIT)
            code = await read_frames(ws, before)
        assert code != 1000  # the server died: no closing handshake
        last = before[-1]["seq"]

        server = stack.enter_context(daphne_server(env, port=port))
        after: list[dict] = []
        async with open_client(server, run_id, token, since=last) as ws:
            code = await read_frames(ws, after)
    assert code == 1000
    assert after[0]["type"] == "connected"
    assert after[0]["payload"]["recovered"] is True
    seen = [f["seq"] for f in before[1:]] + [f["seq"] for f in after[1:]]
    total = 2 + 2 * len(steps)
    assert seen == list(range(1, total + 1))  # every event exactly once, in order
    assert after[-1]["type"] == "run_completed" and after[-1]["payload"]["status"] == "succeeded"
