"""Fixtures of the realtime tests: the channel-layer backend, and connection hygiene."""

import asyncio
import os
import uuid
from typing import Any, NamedTuple

import pytest
from asgiref.sync import SyncToAsync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connections

from realtime.events import publisher
from realtime.reads import threads
from tests.plugin import REDIS_UP
from tests.realtime.support import (
    close_read_thread_connections,
    close_socket,
    discard_pending_retries,
    statements_counted,
)

# A prefix of this session's own: the core layer keeps groups in Redis keys,
# and the shared Redis serves other test sessions too.
_PREFIX = f"asgi-test-{uuid.uuid4().hex[:8]}"


def layer_config(backend: str) -> dict:
    """CHANNEL_LAYERS["default"] for one of the two channels-redis backends, or the in-memory layer."""
    if backend == "memory":
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    hosts = [django_settings.REDIS_URL]
    if backend == "pubsub":
        return {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": hosts, "prefix": _PREFIX},
        }
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": hosts, "prefix": _PREFIX, "group_expiry": django_settings.REALTIME_GROUP_EXPIRY},
    }


def push_layer_backend() -> str:
    """The layer of a test that needs *a* push layer: pub/sub, or without Redis the in-memory one."""
    return "pubsub" if REDIS_UP else "memory"


REDIS_LAYERS = [
    pytest.param("pubsub", marks=pytest.mark.redis),
    pytest.param("redis", marks=pytest.mark.redis),
]


def use_layer(backend: str, settings):
    """Configure ``backend`` as the default channel layer for one test (a generator fixture's body)."""
    settings.CHANNEL_LAYERS = {"default": layer_config(backend)}
    channel_layers.backends = {}
    discard_pending_retries()
    yield backend
    discard_pending_retries()  # a test's failed publishes must not retry into the next
    _close_publisher_connections()
    channel_layers.backends = {}


@pytest.fixture(params=[*REDIS_LAYERS, "memory"])
def layer(request, settings):
    """Runs the test under RedisPubSubChannelLayer, RedisChannelLayer and the in-memory layer."""
    yield from use_layer(request.param, settings)


def _close_publisher_connections() -> None:
    """Close the layer's connections on the publisher loop: a new layer comes with each test."""
    backend = channel_layers.backends.get("default")
    if backend is None or publisher._loop_thread is None:
        return
    loop_thread = publisher._loop_thread

    async def close() -> None:
        per_loop = getattr(backend, "_layers", {})
        layer = per_loop.pop(loop_thread.loop, None)
        if layer is not None:
            await layer.flush()

    loop_thread.run(close(), timeout=5)


class Read(NamedTuple):
    """One read through realtime.reads.threads.read: the selector, its SQL, when it began, its answer."""

    fn: Any
    statements: int
    began: float
    result: Any


@pytest.fixture
def db_reads(monkeypatch) -> list[Read]:
    """Every read through realtime.reads.threads.read (connects, pollers' ticks, access checks), in order."""
    made: list[Read] = []
    original = threads.read

    async def counted(fn, /, **kwargs):
        began = asyncio.get_running_loop().time()
        result, statements = await original(statements_counted(fn), **kwargs)
        made.append(Read(fn, statements, began, result))
        return result

    monkeypatch.setattr(threads, "read", counted)
    return made


@pytest.fixture(autouse=True)
def _close_sync_thread_connections():
    """Close the database connections of asgiref's sync thread after each test.

    database_sync_to_async (and sync_to_async) run in one long-lived thread
    whose Django connection outlives the test (CONN_MAX_AGE); left open, it
    keeps PostgreSQL from dropping the test database at the end of the session
    ("database ... is being accessed by other users").
    """
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    close_read_thread_connections()  # and those of realtime.reads.threads's read threads


@pytest.fixture(autouse=True)
async def _close_open_sockets(monkeypatch):
    """Every WebsocketCommunicator a test opened and left open is closed after it.

    Tests close their sockets in finally blocks; this catches the ones a failed
    assertion or a forgotten close left behind, so a failing test cannot leave
    a consumer (and its hub membership, poller watch, probe) running into the next.
    """
    opened: list[WebsocketCommunicator] = []
    real_init = WebsocketCommunicator.__init__

    def tracked_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(WebsocketCommunicator, "__init__", tracked_init)
    yield
    for ws in opened:
        if not ws.future.done():
            await close_socket(ws)


# Short intervals so that poll-delivered events arrive quickly in tests.
TEST_POLL_INTERVAL = 0.05
TEST_FALLBACK_INTERVAL = 0.2


@pytest.fixture(params=["push", "poll", "hybrid"])
def realtime_mode(request, settings):
    """Runs the test in each REALTIME_MODE (routing reads the mode per connection).

    Short poll intervals; push and hybrid use whatever channel layer the test
    configures (combine with ``layer``, or see tests/scenarios/test_modes.py).
    The `connected` frame then names this mode.
    """
    settings.REALTIME_MODE = request.param
    settings.REALTIME_POLL_INTERVAL = TEST_POLL_INTERVAL
    settings.REALTIME_FALLBACK_INTERVAL = TEST_FALLBACK_INTERVAL
    return request.param


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """The user fixtures set passwords: PBKDF2 costs a second a user on this machine."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Mutation runs (mutation/run.py) of a module that does not depend on the layer or
# the mode run one variant: QUIKDAY_TEST_LAYERS=pubsub, QUIKDAY_TEST_MODES=push.
ONLY_LAYERS = set(filter(None, os.environ.get("QUIKDAY_TEST_LAYERS", "").split(",")))
ONLY_MODES = set(filter(None, os.environ.get("QUIKDAY_TEST_MODES", "").split(",")))


def _wanted(params: dict) -> bool:
    layer, mode = params.get("layer"), params.get("realtime_mode")
    if mode == "poll" and layer not in (None, "memory"):
        return False  # poll mode uses no channel layer: its layer variants once (the in-memory one)
    if ONLY_LAYERS and layer is not None and layer not in ONLY_LAYERS:
        return False
    return not (ONLY_MODES and mode is not None and mode not in ONLY_MODES)


def pytest_collection_modifyitems(config, items):
    """Run each test's layer/mode variants that apply (see _wanted)."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (kept if _wanted(params) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
