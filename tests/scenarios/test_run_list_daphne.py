"""The run-list socket (/ws/runs/) through a real Daphne: nothing comes before `connected`.

tests/realtime/runlist/test_list_poller.py holds this in-process (its read is replaced); here the
Daphne process, its Redis layer and PostgreSQL are real. The socket's snapshot read is held
by a lock of the test's own on the runs table while the layer brings a summary and a
deletion of the user's runs; `connected` must be the first frame, the deletion after it.
"""

import asyncio
import json

import psycopg
import pytest
from channels.layers import channel_layers
from rest_framework.authtoken.models import Token

from realtime.events import publisher
from realtime.reads import summaries
from runs import services
from runs.models import Run
from tests.processes import database_url
from tests.realtime.support import discard_pending_retries
from tests.scenarios.test_protocol_daphne import WAIT, assert_clean_log, open_socket
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


@pytest.fixture
def daphnes_layer(settings):
    """The test process publishes on the layer the module's Daphne listens to (its default: pub/sub)."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    }
    settings.REALTIME_MODE = "push"
    channel_layers.backends = {}
    yield
    discard_pending_retries()
    channel_layers.backends = {}


async def next_frame(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


def test_a_list_socket_sends_nothing_before_connected(daphne_process, daphnes_layer, user):
    server = daphne_process
    token = Token.objects.create(user=user).key
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    other = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    summary = summaries.run_summary(run_id=str(run.id))

    async def scenario(lock):
        async with open_socket(server, "/ws/runs/", token=token) as witness:
            assert (await next_frame(witness))["type"] == "connected"
            await asyncio.to_thread(lock.execute, f"LOCK TABLE {Run._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            async with open_socket(server, "/ws/runs/", token=token) as ws:
                # Its snapshot read waits for the lock (it joined its groups before reading).
                await asyncio.to_thread(wait_for, lambda: lock_waiters(lock), what="the list socket's read")
                await asyncio.to_thread(publisher.publish_summary, summary)
                await asyncio.to_thread(publisher.publish_run_deleted, run_id=other.id, owner_id=user.pk)
                # The same process's socket got them (the summary it may drop: it has that seq),
                # so they are on the waiting socket's channel too.
                while (await next_frame(witness))["type"] != "run_deleted":
                    pass
                await asyncio.to_thread(lock.rollback)
                return [await next_frame(ws), await next_frame(ws)]

    with psycopg.connect(database_url()) as lock:
        hello, deleted = asyncio.run(scenario(lock))
    assert hello["type"] == "connected", hello
    assert {line["id"] for line in hello["payload"]["runs"]} == {str(run.id), str(other.id)}
    assert (deleted["type"], deleted["run_id"]) == ("run_deleted", str(other.id)), deleted
    assert_clean_log(server)


def lock_waiters(lock) -> int:
    with psycopg.connect(database_url(), autocommit=True) as watcher:
        (count,) = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database() AND pid <> %s",
            [lock.info.backend_pid],
        ).fetchone()
    return count
