"""The event log's writer: one ordered event per observable change, in the writer's transaction.

``append`` records one event in the current transaction, with the run's next
``seq`` allocated under the run's row lock (so seq order is commit order), and
hands it to realtime.events.publisher once the transaction commits. Called by
realtime.signals; nothing else writes the log.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from observability import record
from realtime.events import publisher
from realtime.models import RunEvent
from realtime.protocol.frames import (
    RUN_COMPLETED,
    RUN_STATUS,
    STEP_FAILED,
    STEP_RETRIED,
    STEP_SKIPPED,
    STEP_STARTED,
    STEP_SUCCEEDED,
    encode_payload,
    format_ts,
    frame_text,
)
from runs.models import RUN_TERMINAL, Run, RunStatus, Step, StepStatus
from runs.serializers import StepSerializer

# One serializer for every step event: DRF builds a serializer's fields per
# instance (model introspection, field copies), which is per-process work.
_STEP = StepSerializer()

_STEP_EVENT = {
    StepStatus.RUNNING: STEP_STARTED,
    StepStatus.SUCCEEDED: STEP_SUCCEEDED,
    StepStatus.FAILED: STEP_FAILED,
    StepStatus.SKIPPED: STEP_SKIPPED,
}


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
    return _append_step(step, type)


def record_step_retry(*, step: Step) -> RunEvent:
    """step_retried: a running step's new attempt (its started_at and attempts are the new attempt's)."""
    return _append_step(step, STEP_RETRIED)


def _append_step(step: Step, type: str) -> RunEvent:
    run = step.run if Step.run.is_cached(step) else None
    return append(run_id=step.run_id, type=type, payload={"step": _STEP.to_representation(step)}, run=run)


def append(*, run_id: uuid.UUID, type: str, payload: dict[str, Any], run: Run | None = None) -> RunEvent:
    """Append one event to the run's log; publish it after commit."""
    if connection.in_atomic_block:
        event, text = _append(run_id, type, payload)
    else:
        with transaction.atomic():
            event, text = _append(run_id, type, payload)
    if run is not None:
        run.seq = event.seq  # keep the caller's copy in step with the row
    # publisher.publish is looked up at commit time (bench/producer.py times it).
    transaction.on_commit(lambda: publisher.publish(event, text=text), robust=True)
    transaction.on_commit(lambda: record.event_committed(event), robust=True)  # after: not in the latency
    return event


def _append(run_id: uuid.UUID, type: str, payload: dict[str, Any]) -> tuple[RunEvent, str]:
    """Insert the event with the run's next seq; the event, and its frame's text.

    The payload is encoded once: those bytes are stored and spliced into the
    frame, so what is published is exactly what the log holds. On PostgreSQL
    the seq's UPDATE (which takes the run's row lock until commit) and the
    INSERT are one statement, one round trip.
    """
    payload_text = encode_payload(payload)
    ts = timezone.now()
    pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    db_ts = connection.ops.adapt_datetimefield_value(ts)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_APPEND_POSTGRES, [pk, pk, type, payload_text, db_ts])
            row = cursor.fetchone()
        else:
            seq = _allocate_seq(cursor, pk)
            cursor.execute(_APPEND, [pk, seq, type, payload_text, db_ts])
            row = (cursor.fetchone()[0], seq) if seq is not None else None
    if row is None:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    event_id, seq = row
    event = RunEvent(id=event_id, run_id=run_id, seq=seq, type=type, payload=json.loads(payload_text), ts=ts)
    event._state.adding, event._state.db = False, connection.alias
    return event, frame_text(type=type, run_id=run_id, seq=seq, ts=ts, payload_text=payload_text)


_RUN_TABLE = Run._meta.db_table
_EVENT_TABLE = RunEvent._meta.db_table
_APPEND_POSTGRES = f"""
    WITH next AS (UPDATE {_RUN_TABLE} SET seq = seq + 1 WHERE id = %s RETURNING seq)
    INSERT INTO {_EVENT_TABLE} (run_id, seq, type, payload, ts)
    SELECT %s, next.seq, %s, %s::jsonb, %s FROM next
    RETURNING id, seq
"""  # noqa: S608 - table names from the models, values as parameters
_APPEND = (
    f"INSERT INTO {_EVENT_TABLE} (run_id, seq, type, payload, ts) VALUES (%s, %s, %s, %s, %s) RETURNING id"  # noqa: S608
)
_NEXT_SEQ = f"UPDATE {_RUN_TABLE} SET seq = seq + 1 WHERE id = %s RETURNING seq"  # noqa: S608


def _allocate_seq(cursor, pk: Any) -> int | None:
    """The run's next seq (None: no such run). The UPDATE holds the run's row lock until commit."""
    cursor.execute(_NEXT_SEQ, [pk])
    row = cursor.fetchone()
    return None if row is None else row[0]


def _ts_or_none(moment: datetime | None) -> str | None:
    return format_ts(moment) if moment else None
