"""The core of the protocol, in every REALTIME_MODE (the ``realtime_mode`` fixture).

A client cannot tell the modes apart except by `connected`'s payload.mode:
same frames, same seqs, same resume, same close codes, same ping. Push and
hybrid use the pub/sub layer on the shared Redis here, or the in-memory layer
when Redis is not running (every layer is covered by the ``layer`` tests);
poll uses no channel layer at all.
"""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from realtime.delivery.poller import get_poller
from runs import executor, services
from tests.realtime.conftest import layer_config, push_layer_backend
from tests.realtime.support import (
    WAIT,
    application,
    apply_events,
    check_frames,
    fresh_snapshot,
    logged_frames,
    open_socket,
    poller_watchers,
    receive,
    receive_close,
    receive_until_close,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("dispatched", "mode"),
]

ECHO3 = [{"tool": "echo", "args": {"n": i}} for i in range(3)]
FULL_RUN = ["run_status", *["step_started", "step_succeeded"] * 3, "run_completed"]


@pytest.fixture
def mode(realtime_mode, settings):
    settings.CHANNEL_LAYERS = {"default": layer_config(push_layer_backend())}
    channel_layers.backends = {}
    yield realtime_mode
    channel_layers.backends = {}


make_run = sync_to_async(lambda owner, steps=ECHO3: services.run_create(owner=owner, steps=steps))
execute = sync_to_async(lambda run_id: executor.execute_run(run_id=run_id))


@sync_to_async
def advance(run_id, *, steps: int) -> None:
    """Start the run and finish its first ``steps`` steps (2 events each after run_status)."""
    services.run_start(run_id=run_id)
    for index in range(steps):
        services.step_start(run_id=run_id, index=index)
        services.step_succeed(run_id=run_id, index=index, output={"n": index})


async def test_connected_then_a_full_run_then_1000(mode, user, token):
    run = await make_run(user)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["type"] == "connected"
    assert connected["seq"] == 0
    assert connected["payload"]["mode"] == mode
    assert connected["payload"]["recovered"] is False
    assert connected["payload"]["run"] == await fresh_snapshot(run.id)

    await execute(run.id)
    frames, code = await receive_until_close(ws)

    assert code == 1000
    assert [f["type"] for f in frames] == FULL_RUN
    check_frames(frames, run_id=run.id, first_seq=1)
    assert frames == await logged_frames(run.id), "the frames differ from the log"
    assert apply_events(connected["payload"]["run"], frames) == await fresh_snapshot(run.id)


async def test_events_committed_before_and_after_connect(mode, user, token):
    run = await make_run(user)
    await advance(run.id, steps=1)  # seq 1..3
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["seq"] == 3 and connected["payload"]["mode"] == mode

    await execute(run.id)
    frames, code = await receive_until_close(ws)

    assert code == 1000
    check_frames(frames, run_id=run.id, first_seq=4)
    assert frames == await logged_frames(run.id, after=3)
    assert apply_events(connected["payload"]["run"], frames) == await fresh_snapshot(run.id)


async def test_resume_a_live_run_gets_the_backlog_then_live_events(mode, user, token):
    run = await make_run(user)
    await advance(run.id, steps=1)  # seq 1..3
    ws, connected = await open_socket(run.id, headers=token_headers(token), query="since=1")
    assert connected["payload"]["recovered"] is True and connected["seq"] == 3
    backlog = [await receive(ws), await receive(ws)]
    assert backlog == await logged_frames(run.id, after=1)

    await execute(run.id)
    live, code = await receive_until_close(ws)

    assert code == 1000
    check_frames(backlog + live, run_id=run.id, first_seq=2)
    assert backlog + live == await logged_frames(run.id, after=1)


async def test_resume_a_finished_run(mode, user, token):
    run = await make_run(user)
    await execute(run.id)
    ws, connected = await open_socket(run.id, headers=token_headers(token), query="since=5")
    assert connected["payload"]["recovered"] is True and connected["payload"]["mode"] == mode
    frames, code = await receive_until_close(ws)
    assert code == 1000
    assert frames == await logged_frames(run.id, after=5)
    assert [f["seq"] for f in frames] == [6, 7, 8]


async def test_a_finished_run_sends_connected_then_1000(mode, user, token):
    run = await make_run(user)
    await execute(run.id)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["type"] == "connected" and connected["seq"] == 8
    assert connected["payload"]["run"]["status"] == "succeeded"
    assert await receive_close(ws) == 1000


@pytest.mark.parametrize("case", ["4400", "4401", "4403", "4404"])
async def test_close_codes(mode, user, other_user, token, case):
    run = await make_run(user)
    other = await sync_to_async(Token.objects.create)(user=other_user)
    path, headers = {
        "4400": ("/ws/runs/not-a-uuid/", token_headers(token)),
        "4401": (f"/ws/runs/{run.id}/", []),
        "4403": (f"/ws/runs/{run.id}/", token_headers(other.key)),
        "4404": ("/ws/runs/5b8a3d3e-8d8c-4f43-9b8e-2b0c7e9f2a11/", token_headers(token)),
    }[case]
    ws = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await ws.connect(timeout=WAIT)
    assert connected
    frame = await receive(ws)
    assert frame["type"] == "error" and frame["payload"]["code"] == case
    assert await receive_close(ws) == int(case)


async def test_ping_pong_errors_and_oversize(mode, user, token):
    run = await make_run(user)
    await advance(run.id, steps=0)  # seq 1
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    await ws.send_to(text_data='{"type": "ping"}')
    pong = await receive(ws)
    assert pong["type"] == "pong" and pong["seq"] == 1 and pong["payload"] == {}
    await ws.send_to(text_data='{"type": "subscribe"}')
    error = await receive(ws)
    assert error["type"] == "error" and error["payload"]["code"] == "unknown_type"
    await ws.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 70_000}))
    error = await receive(ws)
    assert (error["type"], error["payload"]["code"]) == ("error", "4009")
    assert await receive_close(ws) == 4009
    await ws.disconnect()


async def test_a_finished_connection_leaves_the_poller(mode, user, token):
    """Poll and hybrid connections register with the process's poller and leave it at the end."""
    run = await make_run(user)
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    await ws.send_to(text_data='{"type": "ping"}')
    assert (await receive(ws))["type"] == "pong"  # connect() has returned: the watcher is set up
    poller = get_poller()
    assert poller_watchers(poller) == (0 if mode == "push" else 1)
    await execute(run.id)
    _, code = await receive_until_close(ws)
    assert code == 1000
    assert poller_watchers(poller) == 0
