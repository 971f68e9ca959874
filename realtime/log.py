"""The event log's writer: one ordered event per observable change, in the writer's transaction.

``append`` records one event in the current transaction, with the run's next
``seq`` allocated under the run's row lock (so seq order is commit order), and
hands it to realtime.publisher once the transaction commits. Called by
realtime.signals; nothing else writes the log.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from observability import record
from realtime import publisher
from realtime.frames import (
    RUN_COMPLETED,
    RUN_STATUS,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_STARTED,
    STEP_SUCCEEDED,
    format_ts,
)
from realtime.models import RunEvent
from runs.models import RUN_TERMINAL, Run, RunStatus, Step, StepStatus
from runs.serializers import StepSerializer

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
    # publisher.publish is looked up at commit time (bench/producer.py times it).
    transaction.on_commit(lambda: publisher.publish(event), robust=True)
    transaction.on_commit(lambda: record.event_committed(event), robust=True)  # after: not in the latency
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
