"""Failover end to end: a Daphne process on a Redis of the test's own, stopped and restarted mid-run.

The test process drives the run through runs.services (publishing to the same
Redis); a `websockets` client stays connected to Daphne throughout and must
end with every event exactly once and in order: by push, then by Daphne's
poller while Redis is down, then by push again.
"""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from runs import services
from tests.processes import daphne_server, subprocess_env
from tests.realtime.own_redis import OwnRedis
from tests.realtime.support import check_frames, logged_frames

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.e2e,
    pytest.mark.usefixtures("dispatched"),
]

WAIT = 60.0  # a bound on waiting for something that must happen, not a timing assertion
STEPS = 4


@pytest.fixture
def own_redis(settings):
    server = OwnRedis()
    server.start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [server.url]},
        }
    }
    settings.REALTIME_PUBLISH_TIMEOUT = 0.5
    channel_layers.backends = {}
    yield server
    server.stop()
    from tests.realtime.delivery.test_failover import _drop_publisher_layer

    _drop_publisher_layer()
    channel_layers.backends = {}


async def _frames(ws, count: int) -> list[dict]:
    return [json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT)) for _ in range(count)]


async def _log_says(server, text: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if text in server.log():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"daphne never logged {text!r}:\n{server.log()[-3000:]}")


@sync_to_async
def step(run_id, index: int) -> None:
    services.step_start(run_id=run_id, index=index)
    services.step_succeed(run_id=run_id, index=index, output={"n": index})


async def test_daphne_fails_over_to_polling_and_back(own_redis, user):
    token = (await sync_to_async(Token.objects.create)(user=user)).key
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(STEPS)]
    )
    env = subprocess_env(
        REDIS_URL=own_redis.url,
        REALTIME_MODE="push",
        REALTIME_CHANNEL_LAYER="pubsub",
        REALTIME_POLL_INTERVAL="0.2",
        REALTIME_PUBLISH_TIMEOUT="0.5",
        LOG_LEVEL="INFO",
    )
    with daphne_server(env) as server:
        headers = {"Authorization": f"Token {token}"}
        async with connect(f"{server.ws_url}/ws/runs/{run.id}/", additional_headers=headers) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT))
            assert connected["type"] == "connected" and connected["seq"] == 0
            assert connected["payload"]["mode"] == "push"

            await sync_to_async(services.run_start)(run_id=run.id)
            await step(run.id, 0)
            frames = await _frames(ws, 3)

            own_redis.stop()
            await step(run.id, 1)
            frames += await _frames(ws, 2)
            await _log_says(server, "channel layer unreachable")

            own_redis.start()
            await _log_says(server, "channel layer is back")
            for index in range(2, STEPS):
                await step(run.id, index)
            await sync_to_async(services.run_succeed)(run_id=run.id, output={"done": True})
            frames += await _frames(ws, 2 * (STEPS - 2) + 1)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), timeout=WAIT)
            assert ws.close_code == 1000

        check_frames(frames, run_id=run.id, first_seq=1)
        assert frames == await logged_frames(run.id)
        # channels-redis logs its own receive-task tracebacks while Redis is down;
        # what must not happen is a consumer crashing.
        assert "Exception inside application" not in server.log()
