"""The only module that sends to the channel layer: publishing committed events, retries, the loop thread.

``publish`` sends one committed event to its run's group (realtime.events.log calls
it after commit). A failed publish is logged and swallowed: the event is safe
in the log, and the resume, gap-fill and polling paths deliver it. It is also
retried in the background (``_retry_later``) and reported to the hooks
registered with ``on_publish_failure`` (the failover registers one: this
process's push connections check the layer at once), so this module imports
nothing above it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from observability import record
from realtime.models import RunEvent
from realtime.protocol import frames

logger = logging.getLogger(__name__)

# The message type the process's hub (realtime.delivery.hub) routes to its streams by group.
GROUP_MESSAGE_TYPE = "run.event"

_failure_hooks: list[Callable[[], None]] = []


def on_publish_failure(hook: Callable[[], None]) -> None:
    """Call ``hook()`` (from any thread) whenever a publish of this process fails."""
    if hook not in _failure_hooks:
        _failure_hooks.append(hook)


def _report_failure() -> None:
    for hook in list(_failure_hooks):
        try:
            hook()
        except Exception:  # a hook must not fail the writer either
            logger.warning("a publish-failure hook raised", exc_info=True)


def consumer_layer(alias: str):
    """The channel layer a consumer subscribes through (its channel and groups).

    Consumers receive from the layer; only this module sends to it. Keeping
    the lookup here leaves one module that knows which layer is in use.
    """
    return get_channel_layer(alias)


class PublishError(Exception):
    """The channel layer did not take the message."""


def publish(event: RunEvent, *, text: str | None = None) -> bool:
    """Send one committed event to its run's group. Never raises; False on failure.

    ``text``: the event's frame, when the writer has it already (realtime.events.log).
    """
    if settings.REALTIME_MODE == "poll":
        return False  # no channel layer in polling mode; pollers read the log
    group = frames.group_name(event.run_id)
    message = {
        "type": GROUP_MESSAGE_TYPE,
        "group": group,  # a process's RunHub receives every run's events on one channel
        "seq": event.seq,
        "final": frames.is_final(event.type),
        "text": frames.encode_event(event) if text is None else text,
    }
    try:
        group_send(group, message)
    except Exception as error:  # noqa: BLE001 - a publish must never fail the writer
        logger.warning("publish of %s#%s failed (%s); it stays in the log", event.run_id, event.seq, error)
        record.publish_failed()
        _report_failure()  # this process's push connections check the layer now
        _retry_later(group, message)
        return False
    return True


# A run was deleted: its watchers get a `run_deleted` frame and close 4404 (RunStream.on_deleted).
DELETED_MESSAGE_TYPE = "run.deleted"


def publish_run_deleted(*, run_id, owner_id: int) -> bool:
    """Tell a deleted run's watchers, and its owner's and staff's run lists. Never raises; False on failure.

    Not retried: a watcher that misses it finds the run gone at its next
    reconnect (4404), and the run lists at their next re-read.
    """
    if settings.REALTIME_MODE == "poll":
        return False  # pollers notice the run is gone
    group = frames.group_name(run_id)
    message = {"type": DELETED_MESSAGE_TYPE, "group": group, "run_id": str(run_id)}
    try:
        group_send(group, message)
        group_send_each((frames.user_group_name(owner_id), frames.STAFF_GROUP), message)
    except Exception as error:  # noqa: BLE001 - a publish must never fail the writer
        logger.warning("the deletion of run %s was not published (%s)", run_id, error)
        _report_failure()
        return False
    return True


# --- Run summaries for the user-level stream (/ws/runs/; realtime.runlist.list_feed reads them) ----

SUMMARY_MESSAGE_TYPE = "run.summary"  # ListStream.on_event


def publish_summary(summary: dict[str, Any]) -> bool:
    """Send a run's summary to its owner's and staff's list groups. Never raises; False on failure."""
    message = {
        "type": SUMMARY_MESSAGE_TYPE,
        "run_id": summary["id"],
        "seq": summary["seq"],
        "text": frames.summary_frame_text(summary),
    }
    try:
        group_send_each((frames.user_group_name(summary["owner_id"]), frames.STAFF_GROUP), message)
    except Exception as error:  # noqa: BLE001 - a publish must never fail the writer
        logger.warning("summary of run %s not published (%s); list streams re-read it", summary["id"], error)
        _report_failure()
        return False
    return True


# A group nobody joins: publishing to it opens the connection and reaches no one.
WARM_UP_GROUP = "realtime.warm-up"


def connect_publisher() -> bool:
    """Open this process's publishing connection now, not at its first event.

    Called as each Celery worker process starts (realtime.signals). Otherwise a
    fresh worker's first event also waits for the publisher thread to start and
    for a Redis connection, which dominated the p99 of the bench's latency
    workloads (docs/benchmarks.md). False (logged) when the layer is unreachable; the first
    real publish then tries again.
    """
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return False
    try:
        group_send(WARM_UP_GROUP, {"type": "realtime.warm_up"})
    except Exception as error:  # noqa: BLE001 - the worker starts anyway
        logger.warning("could not connect to the channel layer yet: %s", error)
        return False
    return True


def _retry_later(group: str, message: dict[str, Any]) -> None:
    """Publish again in the background until the layer takes it (or the retry window ends).

    Push watchers only look in the log when a later event shows them a gap, so
    a lost *last* event (run_completed) would leave them waiting. Retrying
    from this process closes that hole; a watcher that has the event already
    (gap fill, polling) drops the late copy by its seq.
    """
    if settings.REALTIME_PUBLISH_RETRY_SECONDS <= 0 or isinstance(get_channel_layer(), InMemoryChannelLayer):
        return
    global _pending_retries
    with _loop_guard:
        if _pending_retries >= MAX_PENDING_RETRIES:
            logger.warning(
                "%d publishes already waiting to be retried; %s relies on the log", _pending_retries, group
            )
            return
        _pending_retries += 1
    future = asyncio.run_coroutine_threadsafe(_retry(group, message), _publisher_loop().loop)
    _retry_futures.add(future)
    future.add_done_callback(_retry_futures.discard)


async def _retry(group: str, message: dict[str, Any]) -> None:
    global _pending_retries
    layer = get_channel_layer()
    delay = settings.REALTIME_PUBLISH_RETRY_DELAY
    deadline = time.monotonic() + settings.REALTIME_PUBLISH_RETRY_SECONDS
    try:
        while time.monotonic() + delay <= deadline:
            await asyncio.sleep(delay)
            try:
                await asyncio.wait_for(layer.group_send(group, message), settings.REALTIME_PUBLISH_TIMEOUT)
            except Exception:  # noqa: BLE001 - still down; back off and try again
                delay = min(delay * 2, 30.0)
                continue
            logger.info("published %s#%s on retry", group, message["seq"])
            record.publish_retried(outcome="published")
            return
        logger.warning("gave up re-publishing %s#%s; it stays in the log", group, message["seq"])
        record.publish_retried(outcome="gave_up")
    finally:
        with _loop_guard:
            _pending_retries -= 1


async def send_probe(layer: Any, group: str, message: dict[str, Any]) -> None:
    """The layer probe's message (realtime/delivery/failover.py), through ``group`` on the running loop.

    Through a group, like a run's events, and on the layer the probe watches:
    a group is kept on one Redis server of a sharded layer, so each server is
    checked on its own (realtime/events/shards.py).
    """
    await layer.group_send(group, message)


def group_send(group: str, message: dict[str, Any]) -> None:
    """group_send from synchronous code, without a new Redis connection per call.

    async_to_sync runs each call in a fresh event loop, and channels-redis
    keeps its connections per loop, so the tutorial pattern connects to Redis
    for every event. Here every synchronous publisher of the process shares one
    long-lived loop (and so one connection pool). The in-memory layer lives on
    the server's loop, so there async_to_sync is the right bridge: every
    in-process publisher (a request, an embedded run: see runs.inline) runs
    in a sync_to_async thread of that loop, where async_to_sync hands the send
    back to it.
    """
    layer = get_channel_layer()
    if layer is None:
        raise PublishError("no channel layer is configured")
    if isinstance(layer, InMemoryChannelLayer):
        async_to_sync(layer.group_send)(group, message)
        return
    _publisher_loop().run(layer.group_send(group, message), timeout=settings.REALTIME_PUBLISH_TIMEOUT)


def group_send_each(groups: tuple[str, ...], message: dict[str, Any]) -> None:
    """``group_send`` to each of ``groups`` in turn, in one hand-off to the publishing loop
    (a summary goes to two groups after every change: one thread hop, not two)."""
    layer = get_channel_layer()
    if layer is None:
        raise PublishError("no channel layer is configured")
    if isinstance(layer, InMemoryChannelLayer):
        for group in groups:
            async_to_sync(layer.group_send)(group, message)
        return

    async def send_each() -> None:
        for group in groups:
            await layer.group_send(group, message)

    _publisher_loop().run(send_each(), timeout=settings.REALTIME_PUBLISH_TIMEOUT)


class _LoopThread:
    """An event loop on a daemon thread, for synchronous callers to submit to."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="realtime-publisher", daemon=True)
        self.thread.start()

    def run(self, coroutine, *, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise PublishError(f"the channel layer did not answer within {timeout:g}s") from None


_loop_thread: _LoopThread | None = None
_loop_guard = threading.Lock()
_pending_retries = 0
_retry_futures: set[concurrent.futures.Future] = set()
MAX_PENDING_RETRIES = 10_000


def _publisher_loop() -> _LoopThread:
    global _loop_thread
    # A forked process (a Celery prefork child) must not reuse its parent's loop.
    if _loop_thread is None or _loop_thread.pid != os.getpid():
        with _loop_guard:
            if _loop_thread is None or _loop_thread.pid != os.getpid():
                _loop_thread = _LoopThread()
    return _loop_thread
