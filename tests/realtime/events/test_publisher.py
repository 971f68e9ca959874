"""realtime.events.publisher on the in-memory layer: the group message, failures reported through the hook.

Publishing against Redis (failures, retries, connection reuse) is in
tests/scenarios/test_publish.py.
"""

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer

from realtime.delivery import failover
from realtime.events import publisher
from realtime.models import RunEvent
from realtime.protocol import frames
from realtime.reads import summaries
from runs import services
from tests.realtime.support import WAIT

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


def test_a_failed_publish_is_reported_to_the_hooks_and_fails_nothing(
    memory_layer, run, settings, monkeypatch, caplog
):
    """(And on the in-memory layer it is not retried from the publisher's thread: kills
    publisher.py's ``RETRY_SECONDS <= 0 or in-memory`` → ``and``.)"""
    settings.REALTIME_PUBLISH_RETRY_SECONDS = 300.0
    monkeypatch.setattr(publisher, "_retry_futures", set())
    reported = []
    monkeypatch.setattr(publisher, "_failure_hooks", [lambda: reported.append(1)])

    async def down(*args, **kwargs):
        raise ConnectionError("down (test)")

    monkeypatch.setattr(memory_layer, "group_send", down)
    with caplog.at_level(logging.WARNING, logger="realtime.events.publisher"):
        assert publisher.publish(RunEvent.objects.get(run_id=run.id, seq=1)) is False
    assert reported == [1]
    assert "stays in the log" in caplog.text
    assert publisher._retry_futures == set()  # the in-memory layer lives on the server's loop only


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


def _retry_message(seq: int) -> dict:
    return {
        "type": publisher.GROUP_MESSAGE_TYPE,
        "group": "run.retry-cap",
        "seq": seq,
        "final": False,
        "text": "{}",
    }


def test_at_most_10_000_failed_publishes_wait_for_a_retry(settings, monkeypatch, caplog):
    """Kills publisher.py's retry cap ``10_000`` → ``10_001`` / ``9_999`` (and ``>=`` → ``>``, ``+= 0``).

    docs/reliability.md: a process keeps at most 10,000 failed publishes waiting
    for a retry (a long outage must not grow it without bound). With 9,999
    waiting, the next failed publish is taken and the one after it is not.
    No retry runs here: the retry itself is a stand-in that only records it was
    started (and so never gives its place back).
    """
    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)  # retries are for a Redis layer (nothing connects here)
    next(layers)
    settings.REALTIME_PUBLISH_RETRY_SECONDS = 300.0
    started = []

    async def recorded_retry(group, message):
        started.append(message["seq"])

    monkeypatch.setattr(publisher, "_retry", recorded_retry)
    monkeypatch.setattr(publisher, "_pending_retries", 10_000 - 1)
    try:
        publisher._retry_later("run.retry-cap", _retry_message(1))
        with caplog.at_level(logging.WARNING, logger="realtime.events.publisher"):
            publisher._retry_later("run.retry-cap", _retry_message(2))
        concurrent.futures.wait(list(publisher._retry_futures), timeout=WAIT)
        assert started == [1]
        assert publisher._pending_retries == 10_000
        assert "10000 publishes already waiting to be retried" in caplog.text
    finally:
        next(layers, None)


@pytest.mark.redis
def test_the_retry_cap_holds_while_retries_come_and_go(settings, monkeypatch, caplog):
    """Kills publisher.py's ``_pending_retries -= 1`` → ``-= 2`` (an ended retry freeing two places).

    With room for one pending retry: a retry runs to its end (the layer takes
    it); the next one is held in its group_send (a named point); a publish that
    fails meanwhile is not retried, because the held one has the only place.
    (Also fails with the cap check ``>=`` → ``>`` and the count ``+= 1`` → ``+= 0``.)
    """
    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)
    next(layers)
    settings.REALTIME_PUBLISH_RETRY_SECONDS, settings.REALTIME_PUBLISH_RETRY_DELAY = 5.0, 0.01
    settings.REALTIME_PUBLISH_TIMEOUT = WAIT  # the held group_send must not time out
    monkeypatch.setattr(publisher, "MAX_PENDING_RETRIES", 1)
    monkeypatch.setattr(publisher, "_pending_retries", 0)
    sent, holding, release = [], threading.Event(), threading.Event()

    async def held_group_send(group, message):
        sent.append(message["seq"])
        if message["seq"] == 2:
            holding.set()  # named point: the second retry has the place, its send under way
            await asyncio.get_running_loop().run_in_executor(None, release.wait, WAIT)

    monkeypatch.setattr(get_channel_layer(), "group_send", held_group_send)
    try:
        publisher._retry_later("run.retry-cap", _retry_message(1))
        concurrent.futures.wait(list(publisher._retry_futures), timeout=WAIT)
        assert sent == [1], "the first retry did not run to its end"
        publisher._retry_later("run.retry-cap", _retry_message(2))
        assert holding.wait(WAIT), "the second retry never reached its group_send"
        with caplog.at_level(logging.WARNING, logger="realtime.events.publisher"):
            publisher._retry_later("run.retry-cap", _retry_message(3))
        assert "already waiting to be retried" in caplog.text
        release.set()
        concurrent.futures.wait(list(publisher._retry_futures), timeout=WAIT)
        assert sent == [1, 2]
    finally:
        release.set()
        next(layers, None)


def test_retries_back_off_doubling_up_to_30_s_between_attempts(settings, monkeypatch):
    """Kills publisher.py's back-off cap ``min(delay * 2, 30.0)`` → ``31.0`` / ``29.0``.

    docs/reliability.md: the retries start ``REALTIME_PUBLISH_RETRY_DELAY``
    apart and double up to 30 s, within ``REALTIME_PUBLISH_RETRY_SECONDS``
    (here the defaults, 0.5 s and 300 s), so a lost last event is published at
    most 30 s after the layer is back. A layer that never takes the message,
    and a clock that each wait moves instead of waiting for.
    """
    settings.REALTIME_PUBLISH_RETRY_SECONDS, settings.REALTIME_PUBLISH_RETRY_DELAY = 300.0, 0.5
    now, waits = [0.0], []

    async def moved_clock_sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    class DownLayer:
        async def group_send(self, group, message):
            raise ConnectionError("the layer is down (test)")

    monkeypatch.setattr(publisher, "get_channel_layer", DownLayer)
    monkeypatch.setattr(publisher, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(
        publisher, "asyncio", SimpleNamespace(sleep=moved_clock_sleep, wait_for=asyncio.wait_for)
    )
    monkeypatch.setattr(publisher, "_pending_retries", 1)  # this retry's place, given back at its end
    asyncio.run(publisher._retry("run.backoff", _retry_message(1)))
    # 0.5 + 1 + 2 + 4 + 8 + 16 = 31.5 s, then 30 s apart while the next attempt still fits in 300 s.
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 8
    assert publisher._pending_retries == 0


def test_a_run_summary_reaches_its_owners_list_group_and_the_staffs(memory_layer, run):
    """Kills publisher.py's publish_summary loop over the list groups emptied (sent to no one).

    A run's summary goes to the groups of the two list streams that show it:
    its owner's and the staff's (docs/protocol.md, /ws/runs/).
    """
    summary = summaries.run_summary(run_id=run.id)
    owner_channel = async_to_sync(memory_layer.new_channel)()
    staff_channel = async_to_sync(memory_layer.new_channel)()
    async_to_sync(memory_layer.group_add)(frames.user_group_name(run.owner_id), owner_channel)
    async_to_sync(memory_layer.group_add)(frames.STAFF_GROUP, staff_channel)

    async def received(channel):
        return await asyncio.wait_for(memory_layer.receive(channel), WAIT)

    assert publisher.publish_summary(summary) is True
    for channel in (owner_channel, staff_channel):
        message = async_to_sync(received)(channel)
        assert (message["type"], message["run_id"], message["seq"]) == (
            publisher.SUMMARY_MESSAGE_TYPE,
            str(run.id),
            summary["seq"],
        )
        frame = json.loads(message["text"])
        assert (frame["type"], frame["seq"], frame["payload"]) == (
            frames.RUN_SUMMARY,
            summary["seq"],
            {"run": summary},
        )


def test_a_forked_process_gets_a_publisher_loop_of_its_own(monkeypatch):
    """Kills publisher.py's second check ``_loop_thread.pid != os.getpid()`` → ``==``.

    A Celery prefork child inherits its parent's loop object but not its
    thread: publishing through it would wait for a loop that never runs. Here
    the inherited loop is a stand-in carrying the parent's pid.
    """
    inherited = SimpleNamespace(pid=os.getpid() + 1, loop=None, thread=None)
    monkeypatch.setattr(publisher, "_loop_thread", inherited)
    own = publisher._publisher_loop()
    try:
        assert own is not inherited
        assert own.pid == os.getpid() and own.thread.is_alive()
        assert publisher._publisher_loop() is own  # and then kept
    finally:
        if own is not inherited:
            own.loop.call_soon_threadsafe(own.loop.stop)
            own.thread.join(WAIT)
            own.loop.close()


def test_a_retry_window_of_0_retries_nothing(settings, monkeypatch):
    """Kills publisher.py's ``REALTIME_PUBLISH_RETRY_SECONDS <= 0`` → ``< 0`` (0 means never)."""
    from tests.realtime.conftest import use_layer

    layers = use_layer("pubsub", settings)  # retries are for a Redis layer (nothing connects here)
    next(layers)
    settings.REALTIME_PUBLISH_RETRY_SECONDS = 0.0
    started = []

    async def recorded_retry(group, message):
        started.append(message["seq"])

    monkeypatch.setattr(publisher, "_retry", recorded_retry)
    monkeypatch.setattr(publisher, "_pending_retries", 0)
    try:
        publisher._retry_later("run.retry-cap", _retry_message(1))
        concurrent.futures.wait(list(publisher._retry_futures), timeout=WAIT)
        assert started == []
        assert publisher._pending_retries == 0
    finally:
        next(layers, None)


def test_a_failed_summary_publish_answers_false_and_is_reported(memory_layer, run, monkeypatch, caplog):
    """Kills publisher.py's publish_summary ``return False`` → ``True`` after a failure."""
    reported = []
    monkeypatch.setattr(publisher, "_failure_hooks", [lambda: reported.append(1)])

    async def down(*args, **kwargs):
        raise ConnectionError("down (test)")

    monkeypatch.setattr(memory_layer, "group_send", down)
    with caplog.at_level(logging.WARNING, logger="realtime.events.publisher"):
        assert publisher.publish_summary(summaries.run_summary(run_id=run.id)) is False
    assert reported == [1]
    assert "list streams re-read it" in caplog.text
