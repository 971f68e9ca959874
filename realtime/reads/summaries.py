"""Run summaries: one line of a run list (status and step counts), for the user-level stream.

The same shape goes out in ``/ws/runs/``'s ``connected`` snapshot, in its live
``run_summary`` frames and in ``GET /api/run-summaries/``. A summary carries the
run's ``seq``: a client keeps, per run, the summary with the highest seq.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from realtime.models import RunEvent
from runs.models import Run, RunStatus, Step, StepStatus
from runs.selectors import run_list_for_user

# A page's snapshot: the newest runs (a list page shows no more).
SNAPSHOT_SIZE = 100
# Owners per IN list of summaries_changed_since; with more, every changed run is read
# (a statement's parameters are bounded: 65,535 in PostgreSQL's protocol).
_OWNERS_IN_ONE_LIST = 10_000
_COUNTED = tuple(
    s.value for s in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.RUNNING)
)

_datetime = serializers.DateTimeField()


def _with_counts(runs: QuerySet[Run]) -> QuerySet[Run]:
    def count(status: str) -> Count:
        return Count("steps", filter=Q(steps__status=status))

    return runs.annotate(
        n_succeeded=count(StepStatus.SUCCEEDED),
        n_failed=count(StepStatus.FAILED),
        n_skipped=count(StepStatus.SKIPPED),
        n_running=count(StepStatus.RUNNING),
    )


def _summary(run: Run) -> dict:
    return _shape(
        id=run.id,
        owner=run.owner.get_username(),
        owner_id=run.owner_id,
        status=run.status,
        prompt=run.prompt,
        seq=run.seq,
        steps_total=len(run.plan or []),
        counts=(run.n_succeeded, run.n_failed, run.n_skipped, run.n_running),
        cancel_requested_at=run.cancel_requested_at,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _shape(*, id, owner, owner_id, status, prompt, seq, steps_total, counts, **moments) -> dict:
    def ts(moment):
        return _datetime.to_representation(moment) if moment else None

    succeeded, failed, skipped, running = counts
    return {
        "id": str(id),
        "owner": owner,
        "owner_id": owner_id,
        "status": status,
        "prompt": prompt[:200],
        "seq": seq,
        "steps_total": steps_total,
        "steps_succeeded": succeeded,
        "steps_failed": failed,
        "steps_skipped": skipped,
        "steps_running": running,
        "cancel_requested": moments["cancel_requested_at"] is not None,
        "created_at": ts(moments["created_at"]),
        "started_at": ts(moments["started_at"]),
        "finished_at": ts(moments["finished_at"]),
    }


def run_summary(*, run_id: uuid.UUID | str) -> dict | None:
    """One run's summary as it is now, or None when the run is gone.

    Read after every change of every run (realtime.runlist.list_feed), so it is one
    hand-written statement: building the annotated queryset of the list's
    path and compiling it cost a worker more CPU than the rest of a step
    transition together. tests/realtime/reads/test_summaries.py holds the two equal.
    """
    run_id = uuid.UUID(str(run_id))
    pk = Run._meta.pk.get_db_prep_value(run_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(_one_summary_sql(connection.vendor), [*_COUNTED, pk])
        row = cursor.fetchone()
    if row is None:
        return None
    owner, owner_id, status, prompt, seq, steps_total, *rest = row
    counts, moments = rest[:4], [_as_datetime(value) for value in rest[4:]]
    return _shape(
        id=run_id,
        owner=owner,
        owner_id=owner_id,
        status=status,
        prompt=prompt,
        seq=seq,
        steps_total=steps_total or 0,
        counts=counts,
        **dict(zip(("cancel_requested_at", "created_at", "started_at", "finished_at"), moments, strict=True)),
    )


@cache
def _one_summary_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    user = get_user_model()._meta
    run, step = Run._meta, Step._meta

    def col(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    length = "jsonb_array_length" if vendor == "postgresql" else "json_array_length"
    counts = ", ".join(f"COUNT(CASE WHEN s.{col(step, 'status')} = %s THEN 1 END)" for _ in _COUNTED)
    moments = ", ".join(
        f"r.{col(run, name)}" for name in ("cancel_requested_at", "created_at", "started_at", "finished_at")
    )
    return f"""
        SELECT u.{col(user, user.model.USERNAME_FIELD)}, r.{col(run, "owner")}, r.{col(run, "status")},
               r.{col(run, "prompt")}, r.{col(run, "seq")}, {length}(r.{col(run, "plan")}),
               {counts}, {moments}
        FROM {quote(run.db_table)} r
        JOIN {quote(user.db_table)} u ON u.{col(user, user.pk.name)} = r.{col(run, "owner")}
        LEFT JOIN {quote(step.db_table)} s ON s.{col(step, "run")} = r.{col(run, "id")}
        WHERE r.{col(run, "id")} = %s
        GROUP BY r.{col(run, "id")}, u.{col(user, user.model.USERNAME_FIELD)}
    """  # noqa: S608 - names from the models, values as parameters


def _as_datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp column as the ORM gives it: SQLite hands back text (UTC, USE_TZ)."""
    if isinstance(value, str):
        value = parse_datetime(value)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value


def run_summaries_for_user(*, user, limit: int = SNAPSHOT_SIZE) -> list[dict]:
    """The newest runs the user may see (staff: everyone's), newest first."""
    return [_summary(run) for run in _with_counts(run_list_for_user(user=user))[:limit]]


def summaries_changed_since(*, since: datetime, owner_ids: Collection[int] | None = None) -> list[dict]:
    """The summaries of the runs that may have moved since ``since``, oldest run first — one statement.

    A summary moves (its seq grows) only with an event of its run, each logged
    with its ``ts`` (realtime.events.log), or with the run's creation: a run without
    events is queued, and creating it sets ``updated_at``. So the runs with an
    event after ``since`` (index runevent_ts) and the queued runs updated after
    it (index run_status_updated) are all the runs whose line may have moved;
    the read grows with the changes, not with the runs or who watches them.
    ``owner_ids`` limits it to those users' runs (None: everyone's, for staff).

    The process's run-list poller (realtime.runlist.list_poller) asks this once per
    tick for every list socket of the process.
    """
    # order_by(): the models' default orderings would join and sort inside the subqueries.
    changed = (
        RunEvent.objects.filter(ts__gt=since)
        .order_by()
        .values("run_id")
        .union(Run.objects.filter(status=RunStatus.QUEUED, updated_at__gt=since).order_by().values("id"))
    )
    runs = Run.objects.filter(pk__in=changed)
    if owner_ids is not None and len(owner_ids) <= _OWNERS_IN_ONE_LIST:
        runs = runs.filter(owner_id__in=list(owner_ids))
    runs = runs.select_related("owner").only(*_SUMMARY_FIELDS).order_by("created_at")
    return [_summary(run) for run in _with_counts(runs)]


# What a summary reads of a run: not its output (a run's step outputs may be large).
_SUMMARY_FIELDS = (
    "owner__" + get_user_model().USERNAME_FIELD,
    *("owner_id", "status", "prompt", "seq", "plan", "cancel_requested_at"),
    *("created_at", "started_at", "finished_at"),
)
