"""realtime.publisher on the in-memory layer: the group message, and failures reported through the hook.

Publishing against Redis (failures, retries, connection reuse) is in
tests/scenarios/test_publish.py.
"""

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer

from realtime import failover, frames, publisher
from realtime.models import RunEvent
from runs import services

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("dispatched")]


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.REALTIME_MODE = "push"
    channel_layers.backends = {}
    yield get_channel_layer()
    channel_layers.backends = {}


@pytest.fixture
def run(user):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    services.run_start(run_id=run.id)
    return run


def test_an_event_reaches_its_runs_group_as_its_frame(memory_layer, run):
    channel = async_to_sync(memory_layer.new_channel)()
    async_to_sync(memory_layer.group_add)(frames.group_name(run.id), channel)
    event = RunEvent.objects.get(run_id=run.id, seq=1)
    assert publisher.publish(event) is True
    message = async_to_sync(memory_layer.receive)(channel)
    assert message == {
        "type": publisher.GROUP_MESSAGE_TYPE,
        "group": frames.group_name(run.id),
        "seq": 1,
        "final": False,
        "text": frames.encode_event(event),
    }
    assert json.loads(message["text"])["type"] == frames.RUN_STATUS


def test_a_failed_publish_is_reported_to_the_hooks_and_fails_nothing(memory_layer, run, monkeypatch, caplog):
    reported = []
    monkeypatch.setattr(publisher, "_failure_hooks", [lambda: reported.append(1)])

    async def down(*args, **kwargs):
        raise ConnectionError("down (test)")

    monkeypatch.setattr(memory_layer, "group_send", down)
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        assert publisher.publish(RunEvent.objects.get(run_id=run.id, seq=1)) is False
    assert reported == [1]
    assert "stays in the log" in caplog.text


def test_a_raising_hook_does_not_stop_the_others(monkeypatch, caplog):
    calls = []

    def broken():
        raise RuntimeError("hook (test)")

    monkeypatch.setattr(publisher, "_failure_hooks", [])
    publisher.on_publish_failure(broken)
    publisher.on_publish_failure(lambda: calls.append("second"))
    publisher.on_publish_failure(broken)  # registered once
    publisher._report_failure()
    assert calls == ["second"]
    assert len(publisher._failure_hooks) == 2


def test_the_failover_listens_for_failed_publishes():
    assert failover.publish_failed in publisher._failure_hooks


def test_poll_mode_publishes_nothing(settings, run, monkeypatch):
    settings.REALTIME_MODE = "poll"

    def no_send(group, message):
        raise AssertionError("poll mode must not touch the channel layer")

    monkeypatch.setattr(publisher, "group_send", no_send)
    assert publisher.publish(RunEvent.objects.get(run_id=run.id, seq=1)) is False


@pytest.mark.redis
def test_a_finished_retry_frees_its_place_under_the_retry_cap(settings, monkeypatch):
    """Kills publisher.py's retry count starting at 1 or never going down (``-= 1`` → ``-= 0``).

    With room for one pending retry: a retry is taken, runs to its end (the
    layer takes the message), and then the next one is taken too.
    """
    import concurrent.futures

    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)
    next(layers)
    settings.REALTIME_PUBLISH_RETRY_SECONDS, settings.REALTIME_PUBLISH_RETRY_DELAY = 5.0, 0.01
    monkeypatch.setattr(publisher, "MAX_PENDING_RETRIES", 1)
    message = {
        "type": publisher.GROUP_MESSAGE_TYPE,
        "group": "run.retry-cap",
        "seq": 1,
        "final": False,
        "text": "{}",
    }
    try:
        for attempt in range(2):
            publisher._retry_later("run.retry-cap", message)
            taken = list(publisher._retry_futures)
            assert len(taken) == 1, f"retry {attempt + 1} was refused"
            concurrent.futures.wait(taken, timeout=10)
            assert taken[0].done() and taken[0].exception() is None
    finally:
        next(layers, None)


def _retry_once_with(
    settings, monkeypatch, failures: int | None, *, seconds: float, delay: float
) -> list[int]:
    """Schedule one background re-publish against a pub/sub layer whose group_send fails
    ``failures`` times (None: always); wait (bounded) for it to end; return the attempts."""
    import concurrent.futures

    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)
    next(layers)
    settings.REALTIME_PUBLISH_RETRY_SECONDS, settings.REALTIME_PUBLISH_RETRY_DELAY = seconds, delay
    attempts: list[int] = []

    async def flaky_group_send(group, message):
        attempts.append(len(attempts) + 1)
        if failures is None or len(attempts) <= failures:
            raise ConnectionError("the layer is down")

    monkeypatch.setattr(get_channel_layer(), "group_send", flaky_group_send)
    message = {
        "type": publisher.GROUP_MESSAGE_TYPE,
        "group": "run.retry",
        "seq": 1,
        "final": False,
        "text": "{}",
    }
    try:
        publisher._retry_later("run.retry", message)
        concurrent.futures.wait(list(publisher._retry_futures), timeout=10)
        return attempts
    finally:
        next(layers, None)


@pytest.mark.redis
def test_a_retry_that_fails_backs_off_and_tries_again(settings, monkeypatch):
    """Kills publisher.py's ``continue`` → ``break`` after a failed retry (giving up at once)."""
    assert _retry_once_with(settings, monkeypatch, 2, seconds=5.0, delay=0.01) == [1, 2, 3]


@pytest.mark.redis
def test_no_retry_starts_past_the_retry_window(settings, monkeypatch):
    """Kills publisher.py's ``monotonic() + delay <= deadline`` → ``- delay`` (retrying past the window).

    A 1 s window and a first delay of 0.6 s: one attempt fits; the next would
    start (after 1.2 s) past the window, so it never does.
    """
    assert _retry_once_with(settings, monkeypatch, None, seconds=1.0, delay=0.6) == [1]
