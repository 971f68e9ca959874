import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from runs import executor, services
from tests.realtime.support import application

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_connect_then_receive_all_events(user, token, dispatched):
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    ws = WebsocketCommunicator(
        application, f"/ws/runs/{run.id}/", headers=[(b"authorization", f"Token {token}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    first = json.loads(await ws.receive_from())
    assert first["type"] == "connected" and first["seq"] == 0
    await sync_to_async(executor.execute_run)(run_id=run.id)
    frames = [json.loads(await ws.receive_from(timeout=3)) for _ in range(4)]
    assert [f["type"] for f in frames] == ["run_status", "step_started", "step_succeeded", "run_completed"]
    assert [f["seq"] for f in frames] == [1, 2, 3, 4]
    assert (await ws.receive_output(timeout=3))["type"] == "websocket.close"
