"""The event log's writer and the only publisher to the channel layer.

``append`` records one event in the current transaction, with the run's next
``seq`` allocated under the run's row lock (so seq order is commit order), and
publishes it to the run's group once the transaction commits. A failed
publish is logged and swallowed: the event is safe in the log, and the resume,
gap-fill and polling paths deliver it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from realtime.models import RunEvent
from runs.models import RUN_TERMINAL, Run, RunStatus, Step, StepStatus
from runs.serializers import StepSerializer

logger = logging.getLogger(__name__)

RUN_STATUS = "run_status"
RUN_COMPLETED = "run_completed"
STEP_STARTED = "step_started"
STEP_SUCCEEDED = "step_succeeded"
STEP_FAILED = "step_failed"
STEP_SKIPPED = "step_skipped"
EVENT_TYPES = (RUN_STATUS, STEP_STARTED, STEP_SUCCEEDED, STEP_FAILED, STEP_SKIPPED, RUN_COMPLETED)

_STEP_EVENT = {
    StepStatus.RUNNING: STEP_STARTED,
    StepStatus.SUCCEEDED: STEP_SUCCEEDED,
    StepStatus.FAILED: STEP_FAILED,
    StepStatus.SKIPPED: STEP_SKIPPED,
}

# The message type a consumer's handler receives: RunConsumer.run_event.
GROUP_MESSAGE_TYPE = "run.event"


def group_name(run_id: uuid.UUID | str) -> str:
    """The channel-layer group of one run's watchers."""
    return f"run.{uuid.UUID(str(run_id)).hex}"


def format_ts(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, always: 2026-11-27T16:07:59.000123Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_frame(*, type: str, run_id: uuid.UUID | str, seq: int, ts: datetime, payload: dict) -> dict:
    return {"type": type, "run_id": str(run_id), "seq": seq, "ts": format_ts(ts), "payload": payload}


def encode_frame(frame: dict) -> str:
    return json.dumps(frame, cls=DjangoJSONEncoder, separators=(",", ":"))


def event_frame(event: RunEvent) -> dict:
    return build_frame(
        type=event.type, run_id=event.run_id, seq=event.seq, ts=event.ts, payload=event.payload
    )


# --- Recording (called by realtime.signals inside the writer's transaction) -----


def record_run_change(*, run: Run) -> RunEvent | None:
    """The event for a run's new status: run_status, or run_completed when terminal."""
    if run.status in RUN_TERMINAL:
        payload = {
            "status": run.status,
            "output": run.output,
            "error": run.error,
            "started_at": _ts_or_none(run.started_at),
            "finished_at": _ts_or_none(run.finished_at),
        }
        return append(run_id=run.pk, type=RUN_COMPLETED, payload=payload, run=run)
    if run.status == RunStatus.QUEUED:
        return None  # only a brand-new run is queued; its snapshot says so
    payload = {"status": run.status, "started_at": _ts_or_none(run.started_at)}
    return append(run_id=run.pk, type=RUN_STATUS, payload=payload, run=run)


def record_step_change(*, step: Step) -> RunEvent | None:
    """The event for a step's new status (a pending step is not observable)."""
    type = _STEP_EVENT.get(step.status)
    if type is None:
        return None
    run = step.run if Step.run.is_cached(step) else None
    return append(run_id=step.run_id, type=type, payload={"step": StepSerializer(step).data}, run=run)


def append(*, run_id: uuid.UUID, type: str, payload: dict[str, Any], run: Run | None = None) -> RunEvent:
    """Append one event to the run's log; publish it after commit."""
    if connection.in_atomic_block:
        event = _append(run_id, type, payload)
    else:
        with transaction.atomic():
            event = _append(run_id, type, payload)
    if run is not None:
        run.seq = event.seq  # keep the caller's copy in step with the row
    transaction.on_commit(lambda: publish(event), robust=True)
    return event


def _append(run_id: uuid.UUID, type: str, payload: dict[str, Any]) -> RunEvent:
    seq = _allocate_seq(run_id)
    # Serialise once here: the stored payload is exactly what clients receive.
    payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    return RunEvent.objects.create(run_id=run_id, seq=seq, type=type, payload=payload, ts=timezone.now())


def _allocate_seq(run_id: uuid.UUID) -> int:
    """The run's next seq. The UPDATE holds the run's row lock until commit."""
    pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Run._meta.db_table} SET seq = seq + 1 WHERE id = %s RETURNING seq",  # noqa: S608
            [pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    return row[0]


def _ts_or_none(moment: datetime | None) -> str | None:
    return format_ts(moment) if moment else None


# --- Publishing -------------------------------------------------------------------


def consumer_layer(alias: str):
    """The channel layer a consumer subscribes through (its channel and groups).

    Consumers receive from the layer; only this module sends to it. Keeping
    the lookup here leaves one module that knows which layer is in use.
    """
    return get_channel_layer(alias)


class PublishError(Exception):
    """The channel layer did not take the message."""


def publish(event: RunEvent) -> bool:
    """Send one committed event to its run's group. Never raises; False on failure."""
    if settings.REALTIME_MODE == "poll":
        return False  # no channel layer in polling mode; pollers read the log
    group = group_name(event.run_id)
    message = {
        "type": GROUP_MESSAGE_TYPE,
        "group": group,  # a process's RunHub receives every run's events on one channel
        "seq": event.seq,
        "final": event.type == RUN_COMPLETED,
        "text": encode_frame(event_frame(event)),
    }
    try:
        group_send(group, message)
    except Exception as error:  # noqa: BLE001 - a publish must never fail the writer
        logger.warning("publish of %s#%s failed (%s); it stays in the log", event.run_id, event.seq, error)
        from realtime import failover  # here: failover imports the consumers' side

        failover.publish_failed()  # this process's push connections check the layer now
        _retry_later(group, message)
        return False
    return True


# A group nobody joins: publishing to it opens the connection and reaches no one.
WARM_UP_GROUP = "realtime.warm-up"


def connect_publisher() -> bool:
    """Open this process's publishing connection now, not at its first event.

    Called as each Celery worker process starts (realtime.signals). Otherwise a
    fresh worker's first event also waits for the publisher thread to start and
    for a Redis connection: 75 ms here, which was the whole p99 of the bench's
    latency workloads. False (logged) when the layer is unreachable; the first
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


def discard_pending_retries() -> int:
    """Cancel the background re-publishes of this process (tests, shutdown); return how many."""
    pending = list(_retry_futures)
    for future in pending:
        future.cancel()
    return len(pending)


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
            return
        logger.warning("gave up re-publishing %s#%s; it stays in the log", group, message["seq"])
    finally:
        with _loop_guard:
            _pending_retries -= 1


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
