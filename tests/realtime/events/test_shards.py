"""The channel layer sharded over two Redis servers of the test's own (REALTIME_REDIS_URLS).

A Daphne process and the test process (the writer, through runs.services) both
spread run groups over the two servers. Runs are picked so that one's group is
on each server (asserted on the servers themselves); watchers of both get
every event once and in order. Stopping one server fails over only the
watchers that need it (to the poller, then back to push when it returns).
"""

import asyncio
from contextlib import AsyncExitStack

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from realtime.events import shards
from realtime.protocol.frames import group_name
from runs import services
from tests.processes import daphne_server, subprocess_env
from tests.realtime.delivery.test_failover import _drop_publisher_layer
from tests.realtime.own_redis import OwnRedis
from tests.realtime.support import (
    LIVE_STACK,
    LiveClient,
    check_frames,
    discard_pending_retries,
    logged_frames,
)
from tests.waiting import WAIT

pytestmark = LIVE_STACK
STEPS = 4
WATCHERS_PER_RUN = 2
BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "redis": "channels_redis.core.RedisChannelLayer",
}


@pytest.fixture(params=sorted(BACKENDS))
def two_shards(request, settings):
    """Two redis-servers of this test's own; the test process's layer sharded over both."""
    servers = [OwnRedis(), OwnRedis()]
    try:
        for server in servers:
            server.start()
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": BACKENDS[request.param], "CONFIG": {"hosts": [s.url for s in servers]}}
        }
        settings.REALTIME_PUBLISH_TIMEOUT = 0.5
        channel_layers.backends = {}
        discard_pending_retries()
        yield request.param, servers
    finally:
        discard_pending_retries()  # publishes to a stopped server must not retry into the next test
        _drop_publisher_layer()
        channel_layers.backends = {}
        for server in servers:
            server.stop()


def _daphne_env(layer: str, servers: list[OwnRedis]) -> dict[str, str]:
    return subprocess_env(
        REALTIME_MODE="push",
        REALTIME_CHANNEL_LAYER=layer,
        REALTIME_REDIS_URLS=",".join(s.url for s in servers),
        REALTIME_POLL_INTERVAL="0.2",
        REALTIME_PUBLISH_TIMEOUT="0.5",
        LOG_LEVEL="DEBUG",  # the per-watcher fallback and recovery lines are DEBUG
    )


@sync_to_async
def _one_run_per_shard(user) -> list:
    """Runs created until one's group hashes to each server: [run on server 0, run on server 1]."""
    layer = get_channel_layer()
    found = {}
    for _ in range(200):
        run = services.run_create(
            owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(STEPS)]
        )
        found.setdefault(shards.group_shard(layer, group_name(run.id)), run)
        if len(found) == 2:
            return [found[0], found[1]]
    raise AssertionError("200 runs all hashed to one server")


def _holds_group(layer: str, server: OwnRedis, group: str) -> bool:
    """Whether ``server`` itself has ``group``: the pub/sub layer's subscription, the core layer's members."""
    client = redis.Redis.from_url(server.url)
    try:
        if layer == "pubsub":
            return dict(client.pubsub_numsub(f"asgi__group__{group}"))[f"asgi__group__{group}".encode()] > 0
        return client.exists(f"asgi:group:{group}") == 1
    finally:
        client.close()


async def _watch(stack, server, run, token: str) -> list[LiveClient]:
    watchers = []
    for _ in range(WATCHERS_PER_RUN):
        ws = await stack.enter_async_context(
            connect(
                f"{server.ws_url}/ws/runs/{run.id}/",
                additional_headers={"Authorization": f"Token {token}"},
                open_timeout=WAIT,
            )
        )
        watcher = LiveClient(ws)
        await watcher.read(1)
        assert (watcher.frames[0]["type"], watcher.frames[0]["seq"]) == ("connected", 0)
        watchers.append(watcher)
    return watchers


@sync_to_async
def _start_and_step(runs, index: int) -> None:
    for run in runs:
        if index == 0:
            services.run_start(run_id=run.id)
        services.step_start(run_id=run.id, index=index)
        services.step_succeed(run_id=run.id, index=index, output={"n": index})


@sync_to_async
def _finish(runs) -> None:
    for run in runs:
        services.run_succeed(run_id=run.id, output={"done": True})


async def _log_says(server, text: str) -> None:
    async with asyncio.timeout(WAIT):
        while text not in server.log():
            await asyncio.sleep(0.05)


async def _check_every_event_once(watchers: dict, runs) -> None:
    for run, group in zip(runs, watchers.values(), strict=True):
        logged = await logged_frames(run.id)
        assert len(logged) == 2 + 2 * STEPS
        for watcher in group:
            got = watcher.frames[1:]
            check_frames(got, run_id=run.id, first_seq=1)
            assert got == logged


async def test_watchers_of_runs_on_either_shard_get_every_event(two_shards, user):
    layer, servers = two_shards
    token = (await sync_to_async(Token.objects.create)(user=user)).key
    runs = await _one_run_per_shard(user)
    with daphne_server(_daphne_env(layer, servers)) as server:
        async with AsyncExitStack() as stack:
            watchers = {run.id: await _watch(stack, server, run, token) for run in runs}
            for index, run in enumerate(runs):  # each run's group is on its own server, and only there
                group = group_name(run.id)
                assert _holds_group(layer, servers[index], group)
                assert not _holds_group(layer, servers[1 - index], group)
            for index in range(STEPS):
                await _start_and_step(runs, index)
            await _finish(runs)
            everyone = [w for group in watchers.values() for w in group]
            codes = await asyncio.gather(*(w.read_to_close() for w in everyone))
        assert codes == [1000] * len(everyone)
        await _check_every_event_once(watchers, runs)
        assert "falls back to polling" not in server.log()


async def test_one_shard_stopping_fails_over_its_watchers_and_back(two_shards, user):
    layer, servers = two_shards
    token = (await sync_to_async(Token.objects.create)(user=user)).key
    runs = await _one_run_per_shard(user)
    healthy_run, stopped_run = runs
    with daphne_server(_daphne_env(layer, servers)) as server:
        async with AsyncExitStack() as stack:
            watchers = {run.id: await _watch(stack, server, run, token) for run in runs}
            everyone = [w for group in watchers.values() for w in group]
            await _start_and_step(runs, 0)
            for watcher in everyone:
                await watcher.read(3)  # run_status, step 0 started and succeeded

            servers[1].stop()
            await _start_and_step(runs, 1)  # the stopped server's run: published nowhere, polled
            for watcher in everyone:
                await watcher.read(2)
            await _log_says(server, f"watcher falls back to polling run_id={stopped_run.id}")

            servers[1].start()
            await _log_says(server, f"watcher is back on push run_id={stopped_run.id}")
            for index in range(2, STEPS):
                await _start_and_step(runs, index)
            await _finish(runs)
            codes = await asyncio.gather(*(w.read_to_close() for w in everyone))
        assert codes == [1000] * len(everyone)
        await _check_every_event_once(watchers, runs)
        if layer == "pubsub":
            # A run's events need only its group's server: the other run's watchers stayed on push.
            assert f"watcher falls back to polling run_id={healthy_run.id}" not in server.log()
        assert "Exception inside application" not in server.log()


async def test_core_layer_loses_direct_sends_to_a_process_channel_but_not_group_sends(settings):
    """channels-redis' core layer, several hosts: ``send`` to a process channel hashes the
    whole name, its receive loop reads where the process part hashes. So the layer probe
    goes through a group (read where it is written); this test says when that can change."""
    from channels_redis.core import RedisChannelLayer
    from channels_redis.utils import _consistent_hash

    servers = [OwnRedis(), OwnRedis()]
    layer = RedisChannelLayer(hosts=[s.url for s in servers])
    try:
        for server in servers:
            server.start()
        channel = await layer.new_channel()
        while _consistent_hash(channel, 2) == shards.channel_shard(layer, channel):
            channel = await layer.new_channel()  # one whose whole name hashes to the other server
        await layer.send(channel, {"type": "direct"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 1.0)

        await layer.group_add("probe", channel)
        await layer.group_send("probe", {"type": "group"})
        assert (await asyncio.wait_for(layer.receive(channel), WAIT))["type"] == "group"
    finally:
        await layer.flush()
        for server in servers:
            server.stop()


def test_which_servers_a_watcher_needs():
    """The layer probe fails over exactly the watchers whose runs depend on a server that is down."""
    from channels.layers import InMemoryChannelLayer
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from channels_redis.utils import _consistent_hash

    hosts = ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"]  # never connected to
    core, pubsub = RedisChannelLayer(hosts=hosts), RedisPubSubChannelLayer(hosts=hosts)
    assert (shards.count(core), shards.count(pubsub), shards.count(InMemoryChannelLayer())) == (2, 2, 1)
    for index in (0, 1):
        other = 1 - index
        # A process channel whose process part, and whole name, are both on the other server.
        channel = next(
            name
            for n in range(1000)
            if _consistent_hash(core.non_local_name(name := f"specific.{n}!x"), 2)
            == _consistent_hash(name, 2)
            == other
        )
        core_group, pubsub_group = shards.group_on(core, index, "run"), shards.group_on(pubsub, index, "run")
        # Core layer: the group's member set, and the process channel its messages are written to.
        assert shards.watcher_shards(core, core_group, channel) == {index, other}
        assert shards.watcher_shards(core, core_group, None) == {index}
        # Pub/sub layer: the group's own subscription only.
        assert shards.watcher_shards(pubsub, pubsub_group, channel) == {index}
    # Any other layer is one server, whatever the names.
    assert shards.watcher_shards(InMemoryChannelLayer(), "run.0", "specific.1!x") == {0}
