"""Publishing: a failed publish never fails the writer, and sync publishers share one connection."""

import logging
import threading
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import channel_layers, get_channel_layer
from redis.asyncio.connection import Connection

from realtime.events import publisher
from realtime.models import RunEvent
from realtime.protocol.frames import group_name
from runs import services, tasks
from tests.processes import free_port
from tests.realtime.conftest import REDIS_LAYERS, layer_config, use_layer
from tests.realtime.support import (
    discard_pending_retries,
    logged_frames,
    open_socket,
    receive,
    receive_until_close,
    token_headers,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(params=REDIS_LAYERS)
def layer(request, settings):
    """Publishing to Redis: both channels-redis layers (the in-memory one has no connections to count)."""
    yield from use_layer(request.param, settings)


async def _layer_down(*args, **kwargs):
    raise ConnectionError("the channel layer is down (test)")


@pytest.mark.usefixtures("layer", "dispatched")
async def test_a_failed_publish_fails_nothing_and_the_log_delivers_it_later(user, token, monkeypatch, caplog):
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(2)]
    )
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["seq"] == 0
        layer = get_channel_layer()
        with (
            monkeypatch.context() as patch,
            caplog.at_level(logging.WARNING, logger="realtime.events.publisher"),
        ):
            patch.setattr(layer, "group_send", _layer_down)
            await sync_to_async(services.run_start)(run_id=run.id)
            await sync_to_async(services.step_start)(run_id=run.id, index=0)
        assert [r.getMessage() for r in caplog.records if "publish of" in r.getMessage()] == [
            f"publish of {run.id}#1 failed (the channel layer is down (test)); it stays in the log",
            f"publish of {run.id}#2 failed (the channel layer is down (test)); it stays in the log",
        ]
        assert await sync_to_async(RunEvent.objects.filter(run_id=run.id).count)() == 2
        # The layer is back: the next event's arrival fills the gap from the log first.
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output=None)
        frames = [await receive(ws) for _ in range(3)]
        assert frames == await logged_frames(run.id)
        assert [f["type"] for f in frames] == ["run_status", "step_started", "step_succeeded"]
    finally:
        await ws.disconnect()

    # The worker's task with the layer down: it succeeds, the events wait in the log.
    with monkeypatch.context() as patch:
        patch.setattr(layer, "group_send", _layer_down)
        assert await sync_to_async(tasks.execute_run)(str(run.id)) == "succeeded"
    ws, connected = await open_socket(run.id, headers=token_headers(token), query="since=3")
    frames, code = await receive_until_close(ws)
    await ws.disconnect()
    assert (connected["seq"], connected["payload"]["recovered"], code) == (6, True, 1000)
    assert frames == await logged_frames(run.id, after=3)
    assert [f["type"] for f in frames] == ["step_started", "step_succeeded", "run_completed"]


@pytest.fixture(params=["pubsub", "redis"])
def dead_layer(request, settings):
    """A channel layer whose Redis does not answer (nothing listens on the port)."""
    config = layer_config(request.param)
    config["CONFIG"]["hosts"] = [f"redis://127.0.0.1:{free_port()}/0"]
    settings.CHANNEL_LAYERS = {"default": config}
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.mark.usefixtures("dead_layer", "dispatched")
def test_with_redis_unreachable_saves_and_the_task_succeed(user):
    run = services.run_create(owner=user, steps=[{"tool": "echo"}, {"tool": "fail"}])
    assert tasks.execute_run(str(run.id)) == "failed"
    assert list(RunEvent.objects.filter(run_id=run.id).values_list("seq", "type")) == [
        (1, "run_status"),
        (2, "step_started"),
        (3, "step_succeeded"),
        (4, "step_started"),
        (5, "step_failed"),
        (6, "run_completed"),
    ]
    assert publisher.publish(RunEvent.objects.get(run_id=run.id, seq=6)) is False


@pytest.fixture
def redis_connects(monkeypatch):
    """A list that grows by one for every new Redis connection opened by redis.asyncio."""
    opened = []
    original = Connection._connect

    async def counting(self):
        opened.append(threading.current_thread().name)
        return await original(self)

    monkeypatch.setattr(Connection, "_connect", counting)
    return opened


def _publish_many(count: int) -> None:
    group = group_name(uuid.uuid4())
    for seq in range(count):
        publisher.group_send(
            group, {"type": publisher.GROUP_MESSAGE_TYPE, "seq": seq, "final": False, "text": "{}"}
        )


@pytest.mark.usefixtures("layer")
def test_publishing_from_sync_code_reuses_one_connection(redis_connects):
    for _ in range(3):  # one thread after another, as a worker's tasks
        thread = threading.Thread(target=_publish_many, args=(50,))
        thread.start()
        thread.join()
    _publish_many(50)
    # 200 publishes from four threads: one loop, one connection (the layer is new in this test).
    assert redis_connects == ["realtime-publisher"]
    assert [t.name for t in threading.enumerate()].count("realtime-publisher") == 1
    assert publisher._publisher_loop() is publisher._publisher_loop()


# Redis commands per group_send: pub/sub's is one PUBLISH; the core layer's is
# ZREMRANGEBYSCORE then ZRANGE on the group, and redis-py's pool may open a
# connection for the second while the first is on its way back (measured: 4-7
# connections for 4 threads, for 200 events as for 2,000).
COMMANDS_PER_PUBLISH = {"pubsub": 1, "redis": 2}


@pytest.mark.parametrize("events_per_thread", [50, 500])
def test_concurrent_publishers_open_connections_by_concurrency_not_by_events(
    layer, redis_connects, events_per_thread
):
    threads = [threading.Thread(target=_publish_many, args=(events_per_thread,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Bounded by how many commands are in flight at once (the pool), not by the 200 or 2,000 publisher.
    assert 1 <= len(redis_connects) <= 4 * COMMANDS_PER_PUBLISH[layer]
    assert set(redis_connects) == {"realtime-publisher"}


@pytest.mark.usefixtures("layer")
def test_the_tutorial_pattern_connects_per_publish(redis_connects):
    """What the test above guards against: async_to_sync opens a connection per call."""
    layer = get_channel_layer()
    group = group_name(uuid.uuid4())
    for seq in range(5):
        async_to_sync(layer.group_send)(
            group, {"type": publisher.GROUP_MESSAGE_TYPE, "seq": seq, "text": "{}"}
        )
    assert len(redis_connects) >= 5


def _drop_first_final(layer):
    """Wrap layer.group_send so that the first publish of a final event fails."""
    real, dropped = layer.group_send, []

    async def group_send(group, message):
        if message.get("final") and not dropped:
            dropped.append(message["seq"])
            raise ConnectionError("the channel layer blipped (test)")
        return await real(group, message)

    return group_send, dropped


@pytest.mark.usefixtures("layer", "dispatched")
@pytest.mark.parametrize("retry_seconds", [30.0, 0.0], ids=["retried", "control-no-retry"])
async def test_a_failed_last_publish_is_retried_so_push_watchers_still_finish(
    user, token, settings, monkeypatch, retry_seconds
):
    """In push mode only a later event reveals a gap: the last one must be re-published."""
    settings.REALTIME_MODE = "push"
    settings.REALTIME_PUBLISH_RETRY_SECONDS = retry_seconds
    settings.REALTIME_PUBLISH_RETRY_DELAY = 0.05
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo", "args": {}}])
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    assert connected["seq"] == 0
    layer = get_channel_layer()
    group_send, dropped = _drop_first_final(layer)
    monkeypatch.setattr(layer, "group_send", group_send)
    try:
        assert await sync_to_async(tasks.execute_run)(str(run.id)) == "succeeded"
        assert dropped == [4]
        if retry_seconds:
            frames, code = await receive_until_close(ws)
            assert [f["seq"] for f in frames] == [1, 2, 3, 4]
            assert (frames[-1]["type"], code) == ("run_completed", 1000)
        else:
            frames = [await receive(ws) for _ in range(3)]
            assert [f["seq"] for f in frames] == [1, 2, 3]
            assert discard_pending_retries() == 0  # nothing will publish seq 4 again
            await ws.send_to(text_data='{"type": "ping"}')  # a marker: nothing came before its answer
            assert (await receive(ws))["type"] == "pong"
    finally:
        await ws.disconnect()


@pytest.mark.usefixtures("layer")
def test_a_worker_process_connects_its_publisher_as_it_starts(redis_connects):
    from celery.signals import worker_process_init

    worker_process_init.send(sender="test-worker")  # what each Celery pool process sends at start
    assert redis_connects == ["realtime-publisher"]  # connected before any event
    _publish_many(20)
    assert redis_connects == ["realtime-publisher"]  # and the events reuse that connection


def test_connect_publisher_is_a_no_op_without_redis(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends = {}
    try:
        assert publisher.connect_publisher() is False
    finally:
        channel_layers.backends = {}


def test_connect_publisher_reports_an_unreachable_layer_and_raises_nothing(settings, caplog):
    settings.REALTIME_PUBLISH_TIMEOUT = 0.5
    settings.CHANNEL_LAYERS = {"default": layer_config("pubsub")}
    settings.CHANNEL_LAYERS["default"]["CONFIG"] = {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]}
    channel_layers.backends = {}
    try:
        with caplog.at_level(logging.WARNING, logger="realtime.events.publisher"):
            assert publisher.connect_publisher() is False
        assert "could not connect to the channel layer yet" in caplog.text
    finally:
        channel_layers.backends = {}


@pytest.mark.redis
def test_connect_publisher_answers_true_once_connected(settings, redis_connects):
    """Kills publisher.py's connect_publisher ``return True`` → ``False`` (its docstring's answer)."""
    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)
    next(layers)
    try:
        assert publisher.connect_publisher() is True
        assert redis_connects == ["realtime-publisher"]
    finally:
        next(layers, None)
