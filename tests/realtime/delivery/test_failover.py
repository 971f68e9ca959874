"""Automatic failover with real parts: a Redis of the test's own, stopped and restarted mid-run.

The client stays connected throughout and must end with every event exactly
once and in order: push before the outage, the process's poller during it,
push again after Redis is back (with a catch-up from the log in between).
"""

import asyncio
import logging
import re
import time
import uuid
import weakref

import channels_redis.core
import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer

from realtime.delivery import failover
from realtime.delivery.poller import get_poller
from realtime.events import publisher
from realtime.protocol.frames import group_name
from realtime.sockets.run import RunStream
from runs import services
from tests.realtime.own_redis import OwnRedis
from tests.realtime.support import (
    WAIT,
    check_frames,
    close_socket,
    logged_frames,
    open_socket,
    poller_watchers,
    receive,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.usefixtures("dispatched"),
]

STEPS = 5


@pytest.fixture
def own_redis():
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


def _layer_config(kind: str, url: str) -> dict:
    if kind == "pubsub":
        return {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url]}}
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [url], "group_expiry": 900},
    }


@pytest.fixture
def failover_settings(settings, own_redis, request):
    settings.REALTIME_POLL_INTERVAL = 0.1
    settings.REALTIME_FALLBACK_INTERVAL = 0.5
    settings.REALTIME_PUBLISH_TIMEOUT = 0.5
    channel_layers.backends = {}
    yield settings
    _drop_publisher_layer()
    channel_layers.backends = {}


def _drop_publisher_layer() -> None:
    """Close the publisher loop's connections to this test's Redis (it goes away)."""
    backend = channel_layers.backends.get("default")
    loop_thread = publisher._loop_thread
    if backend is None or loop_thread is None:
        return

    async def close() -> None:
        layer = getattr(backend, "_layers", {}).pop(loop_thread.loop, None)
        if layer is not None:
            await layer.flush()

    try:
        loop_thread.run(close(), timeout=5)
    except Exception:
        pass


@sync_to_async
def do_step(run_id, index: int) -> None:
    services.step_start(run_id=run_id, index=index)
    services.step_succeed(run_id=run_id, index=index, output={"n": index})


async def _until(condition, what: str) -> None:
    """Wait (bounded by WAIT) for ``condition()``: the probe works on its own schedule."""
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still waiting for: {what}")


async def _frames(ws, count: int) -> list[dict]:
    return [await receive(ws) for _ in range(count)]


@pytest.mark.parametrize("kind", ["pubsub", "redis"])
@pytest.mark.parametrize("mode", ["push", "hybrid"])
async def test_redis_stops_and_restarts_mid_run(
    failover_settings, own_redis, user, token, kind, mode, caplog
):
    """(Also: the outage is logged once when found and once when over, not at every check.)"""
    caplog.set_level(logging.WARNING, logger="realtime.delivery.failover")
    failover_settings.REALTIME_MODE = mode
    failover_settings.CHANNEL_LAYERS = {"default": _layer_config(kind, own_redis.url)}
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(STEPS)]
    )
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["payload"]["mode"] == mode and connected["seq"] == 0
        (consumer,) = failover.get_probe().consumers
        poller = get_poller()
        base_interval = consumer.fallback_interval()

        # 1. Redis up: push.
        await sync_to_async(services.run_start)(run_id=run.id)
        await do_step(run.id, 0)
        frames = await _frames(ws, 3)
        assert not consumer.degraded and poller.interval_of(consumer) == base_interval

        # 2. Redis down: the publishes fail, the connection falls back to polling.
        own_redis.stop()
        await do_step(run.id, 1)
        await do_step(run.id, 2)
        frames += await _frames(ws, 4)
        assert consumer.degraded
        assert poller.interval_of(consumer) == failover_settings.REALTIME_POLL_INTERVAL

        # 3. Redis back on the same port: the connection rejoins its group and leaves the poller.
        own_redis.start()
        await _until(lambda: not consumer.degraded, "the connection to return to push")
        assert consumer.subscribed and poller.interval_of(consumer) == base_interval

        for index in range(3, STEPS):
            await do_step(run.id, index)
        await sync_to_async(services.run_succeed)(run_id=run.id, output={"done": True})
        frames += await _frames(ws, 2 * (STEPS - 3) + 1)
        closing = await ws.receive_output(timeout=WAIT)
        assert closing == {"type": "websocket.close", "code": 1000}

        # Every event exactly once, in order, exactly as logged.
        check_frames(frames, run_id=run.id, first_seq=1)
        assert frames == await logged_frames(run.id)
        assert frames[-1]["type"] == "run_completed"
        await ws.disconnect(timeout=WAIT)  # returns once the consumer has ended
        assert ws.output_queue.empty()  # so nothing was sent after the close

        # One outage, told once as found and once as over (kills failover.py's "back" check
        # ``not down and ...`` → ``down and ...``, which logs every other check of the outage).
        # The second line says how long it lasted and how many watchers return to push.
        told = [
            record.getMessage()
            for record in caplog.records
            if record.name == "realtime.delivery.failover"
            and record.getMessage().startswith("channel layer ")
        ]
        assert len(told) == 2 and told[0].startswith("channel layer unreachable (Redis server 0 of 1: ")
        back = re.fullmatch(
            r"channel layer is back after (\d+\.\d) s; (\d+) watchers return to push", told[1]
        )
        assert back and float(back[1]) < 10 * WAIT and back[2] == "1", told[1]
    finally:
        await close_socket(ws)
        await _flush_server_layer()


async def _flush_server_layer() -> None:
    layer = channel_layers.backends.get("default")
    if layer is not None:
        try:
            await layer.flush()
        except Exception:
            pass


class _LayerClock:
    """channels_redis.core's ``time`` module, running ``ahead`` seconds in the future."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


@pytest.mark.redis
async def test_long_lived_connections_refresh_their_group_membership(settings, user, token, monkeypatch):
    """Core RedisChannelLayer drops group members older than group_expiry; the probe re-adds live ones.

    Instead of waiting past the expiry, the layer's clock jumps past it; the
    test then waits for the probe's next re-add (a named point), not for time.
    """
    from tests.realtime.conftest import layer_config

    config = layer_config("redis")
    config["CONFIG"] = {**config["CONFIG"], "group_expiry": 1}
    settings.CHANNEL_LAYERS = {"default": config}
    settings.REALTIME_MODE = "push"
    settings.REALTIME_POLL_INTERVAL = 0.1
    channel_layers.backends = {}
    clock = _LayerClock()
    monkeypatch.setattr(channels_redis.core, "time", clock)
    layer = get_channel_layer()
    refreshed, real_group_add = asyncio.Event(), layer.group_add

    async def noted_group_add(group, channel):
        await real_group_add(group, channel)
        if clock.ahead and group.startswith("run."):
            refreshed.set()  # the run's membership re-added after the jump (not the probe's group)

    monkeypatch.setattr(layer, "group_add", noted_group_add)
    failed_over, real_degrade = [], RunStream.on_layer_down

    def noted_degrade(self):
        failed_over.append(self.run_id)
        real_degrade(self)

    monkeypatch.setattr(RunStream, "on_layer_down", noted_degrade)
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["payload"]["mode"] == "push"
        clock.ahead = 5.0  # well past the expiry: only a refreshed membership still receives
        await asyncio.wait_for(refreshed.wait(), WAIT)
        await sync_to_async(services.run_start)(run_id=run.id)
        frame = await receive(ws)
        assert (frame["type"], frame["seq"]) == ("run_status", 1)
        assert poller_watchers(get_poller()) == 0  # it came by push, not by a poll
        # A refresh is no outage: the watcher never left push (kills failover.py's
        # ``subscribed and not resubscribe()`` → ``or``: every refresh failed it over and back).
        assert failed_over == []
    finally:
        await close_socket(ws)
        _drop_publisher_layer()
        await _flush_server_layer()
        channel_layers.backends = {}


@pytest.mark.parametrize("kind", ["pubsub", "redis"])
async def test_redis_down_at_connect(failover_settings, own_redis, user, token, kind):
    """group_add (with pub/sub, opening the channel too) fails at connect: polling serves the client."""
    failover_settings.REALTIME_MODE = "push"
    failover_settings.CHANNEL_LAYERS = {"default": _layer_config(kind, own_redis.url)}
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(2)]
    )
    own_redis.stop()
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["type"] == "connected" and connected["payload"]["mode"] == "push"
        (consumer,) = failover.get_probe().consumers
        assert consumer.degraded and not consumer.subscribed

        await sync_to_async(services.run_start)(run_id=run.id)
        await do_step(run.id, 0)
        frames = await _frames(ws, 3)

        own_redis.start()
        await _until(lambda: not consumer.degraded, "the connection to join its group")
        assert consumer.subscribed and get_poller().interval_of(consumer) is None

        await do_step(run.id, 1)
        await sync_to_async(services.run_succeed)(run_id=run.id, output={"done": True})
        frames += await _frames(ws, 3)
        assert await ws.receive_output(timeout=WAIT) == {"type": "websocket.close", "code": 1000}
        check_frames(frames, run_id=run.id, first_seq=1)
        assert frames == await logged_frames(run.id)
    finally:
        await close_socket(ws)
        await _flush_server_layer()


@pytest.fixture
def memory_layer(settings):
    from tests.realtime.conftest import use_layer

    settings.REALTIME_MODE = "push"
    yield from use_layer("memory", settings)


async def test_a_healthy_probe_leaves_its_watchers_alone(memory_layer, monkeypatch, user, token):
    """With the layer up and no watcher degraded, a check looks at no watcher (issue 13: idle CPU)."""

    looked_at = []
    real_layer_names = RunStream.layer_names

    def noted_layer_names(self):
        looked_at.append(self)
        return real_layer_names(self)

    monkeypatch.setattr(RunStream, "layer_names", noted_layer_names)
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    sockets = []
    try:
        for _ in range(3):
            ws, connected = await open_socket(run.id, headers=token_headers(token))
            sockets.append(ws)
            assert connected["payload"]["mode"] == "push"
        probe = failover.get_probe()
        await probe.check()
        await probe.check()
        assert looked_at == [] and probe.healthy

        probe.suspect()  # what a watcher whose layer call failed does
        await probe.check()
        assert len(looked_at) == 3 and probe.healthy  # each looked at once, none left degraded
        await probe.check()
        assert len(looked_at) == 3
    finally:
        for ws in sockets:
            await close_socket(ws)


class _StandInWatcher:
    """What the probe needs of a push connection (failover.PushWatcher): degraded, recording its recovery."""

    def __init__(self, *, recover_raises: bool = False) -> None:
        self.run_id = uuid.uuid4()
        self.degraded, self.subscribed = True, False
        self.recover_raises, self.recoveries, self.resubscriptions = recover_raises, 0, 0

    def on_layer_down(self) -> None:
        self.degraded = True

    async def on_layer_up(self) -> bool:
        self.recoveries += 1
        if self.recover_raises:
            raise ConnectionError("the catch-up's log read failed (test)")
        self.degraded, self.subscribed = False, True
        return True

    async def resubscribe(self) -> bool:
        self.resubscriptions += 1
        return True

    def layer_names(self) -> tuple[list[str], str | None]:
        return [group_name(self.run_id)], None


@pytest.fixture
def pubsub_layer(settings):
    from tests.realtime.conftest import use_layer

    yield from use_layer("pubsub", settings)


@pytest.mark.redis
async def test_a_watcher_failing_to_return_to_push_does_not_keep_the_others_off_it(pubsub_layer, caplog):
    """Kills failover.py's ``except Exception`` around ``recover()`` narrowed to a class never raised.

    The layer is back and two watchers are degraded; the first one's recovery
    raises (its catch-up read failed). The check goes on: the other returns to
    push, and the check itself does not raise (it would end the probe's task,
    leaving every watcher of the process on the poller).
    """
    probe = failover.LayerProbe(asyncio.get_running_loop())
    probe._layer = layer = get_channel_layer()
    failing, other = _StandInWatcher(recover_raises=True), _StandInWatcher()
    probe.consumers.update([failing, other])  # as register() does, without starting the probe's task
    probe.suspect()  # what a watcher that degrades itself does
    try:
        await probe.check()
        assert (failing.recoveries, other.recoveries, other.degraded) == (1, 1, False)
        assert "could not return to push" in caplog.text
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_each_processs_probe_gets_only_its_own_messages(pubsub_layer, monkeypatch):
    """Kills failover.py's ``if self._stem is None`` → ``is not None`` (every probe on one shared group).

    Each process's probe sends through a group of its own. Sharing one, every
    probe message would reach every process: N processes, N² messages a check.
    Two probes on one layer (two processes would each have one): what each
    probe's channel receives is its own probe messages only.
    """
    layer = get_channel_layer()
    sender: dict[str, failover.LayerProbe] = {}  # token → the probe that sent it
    received: list[tuple[str, str]] = []  # (channel, token)
    probes = [failover.LayerProbe(asyncio.get_running_loop()) for _ in range(2)]
    checking = probes[0]
    real_send_probe, real_receive = publisher.send_probe, layer.receive

    async def noted_send_probe(on_layer, group, message):
        sender[message["token"]] = checking
        await real_send_probe(on_layer, group, message)

    async def noted_receive(channel):
        message = await real_receive(channel)
        received.append((channel, message.get("token")))
        return message

    monkeypatch.setattr(publisher, "send_probe", noted_send_probe)
    monkeypatch.setattr(layer, "receive", noted_receive)
    try:
        for checking in [*probes, *probes]:
            checking._layer = layer
            assert await checking._round_trip(0) is None
        assert [sender[token]._channel == channel for channel, token in received] == [True] * 4
    finally:
        await layer.flush()


class _ProbeClock:
    """The probe's event loop as far as a check reads it: its clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.mark.redis
async def test_memberships_are_refreshed_once_per_third_of_the_group_expiry(settings):
    """Kills failover.py's refresh cadence ``time() - refreshed_at < expiry / 3`` (``+``, ``/ 4``, ``* 3``).

    The core layer forgets a membership after ``group_expiry``; the probe re-adds
    every live one each third of it (the module's docstring), not at every check:
    with thousands of watchers, each refresh is a ``group_add`` per watcher.
    """
    from tests.realtime.conftest import use_layer

    layers = use_layer("redis", settings)
    next(layers)
    layer = get_channel_layer()
    third = layer.group_expiry / 3
    clock = _ProbeClock()
    probe = failover.LayerProbe(clock)  # checked by the test: no probe task, only the clock is read
    probe._layer = layer
    watcher = _StandInWatcher()
    watcher.degraded, watcher.subscribed = False, True
    probe.consumers.add(watcher)
    refreshed = []
    try:
        for ahead in (0.0, third - 1, third + 1, third + 2, 2 * third + 0.5, 2 * third + 2):
            clock.now = 1000.0 + ahead
            await probe.check()
            refreshed.append(watcher.resubscriptions)
        assert refreshed == [0, 0, 1, 1, 1, 2]
    finally:
        await layer.flush()
        next(layers, None)


class _NotedEvent(asyncio.Event):
    """The probe's wake-up event: ``waiting`` is set when the probe's task waits on it (a named point)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self):
        self.waiting.set()
        return await super().wait()


async def test_the_probe_stops_as_its_last_watcher_leaves(settings):
    """Kills failover.py's ``if not self.consumers: self.wake()`` → ``if self.consumers`` in unregister.

    The probe's task sleeps a poll interval between checks; when the last
    watcher leaves, it must end at once, not after sleeping that interval out
    (here an hour: the test's wait for it is bounded by WAIT).
    """
    settings.REALTIME_POLL_INTERVAL = 3600.0
    probe = failover.LayerProbe(asyncio.get_running_loop())
    probe._wake = wake = _NotedEvent()
    watcher = _StandInWatcher()
    probe.register(watcher, get_channel_layer())
    task = probe._task
    try:
        await asyncio.wait_for(wake.waiting.wait(), WAIT)  # the task sleeps until its next check
        probe.unregister(watcher)
        await asyncio.wait_for(task, WAIT)
        assert probe._task is None
    finally:
        task.cancel()


async def test_a_failed_publish_wakes_each_probe_with_watchers_at_once(settings, monkeypatch):
    """Kills failover.py's publish_failed loop emptied, ``not is_closed`` → ``is_closed``, ``and`` → ``or``.

    A publish of this process failed (reported from the publisher's thread):
    the probe of each event loop that has watchers checks the layer now, not at
    its next tick (an hour here); the probe of a loop that is closed is skipped,
    without failing the report.
    """
    settings.REALTIME_POLL_INTERVAL = 3600.0
    monkeypatch.setattr(failover, "_probes", weakref.WeakKeyDictionary())
    closed_loop = asyncio.new_event_loop()
    closed_loop.close()
    stale = failover._probes[closed_loop] = failover.LayerProbe(closed_loop)
    stale.consumers.add(_StandInWatcher())
    probe = failover.get_probe()
    probe._wake = wake = _NotedEvent()
    checked = asyncio.Event()

    async def noted_check():
        checked.set()

    monkeypatch.setattr(probe, "check", noted_check)
    watcher = _StandInWatcher()
    probe.register(watcher, get_channel_layer())
    task = probe._task
    try:
        await asyncio.wait_for(wake.waiting.wait(), WAIT)  # the task sleeps until its next check
        await asyncio.get_running_loop().run_in_executor(None, failover.publish_failed)
        await asyncio.wait_for(checked.wait(), WAIT)
    finally:
        probe.unregister(watcher)
        task.cancel()


@pytest.mark.redis
async def test_a_watcher_failing_over_is_told_once_however_often_it_is_degraded(
    pubsub_layer, settings, user, token, caplog
):
    """Kills stream.py's ``if not self.layer_down: self._transport_changed()`` → ``if self.layer_down``.

    The lifecycle line (and the failovers metric) counts a watcher falling back
    to polling once, not each further time the layer fails it while it polls.
    """
    settings.REALTIME_MODE = "push"
    caplog.set_level(logging.DEBUG, logger="quikday.lifecycle")
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    try:
        (watcher,) = failover.get_probe().consumers

        def told() -> int:
            return sum(
                1 for r in caplog.records if r.getMessage().startswith("watcher falls back to polling")
            )

        watcher.on_layer_down()
        assert told() == 1
        watcher.on_layer_down()  # again, before the probe has brought it back
        assert told() == 1
    finally:
        await close_socket(ws)
