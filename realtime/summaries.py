"""Run summaries: one line of a run list (status and step counts), for the user-level stream.

The same shape goes out in ``/ws/runs/``'s ``connected`` snapshot, in its live
``run_summary`` frames and in ``GET /api/run-summaries/``. A summary carries the
run's ``seq``: a client keeps, per run, the summary with the highest seq.
"""

from __future__ import annotations

import uuid

from django.db.models import Count, Q, QuerySet
from rest_framework import serializers

from runs.models import Run, StepStatus
from runs.selectors import run_list_for_user

# A page's snapshot: the newest runs (a list page shows no more).
SNAPSHOT_SIZE = 100

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
    def ts(moment):
        return _datetime.to_representation(moment) if moment else None

    return {
        "id": str(run.id),
        "owner": run.owner.get_username(),
        "owner_id": run.owner_id,
        "status": run.status,
        "prompt": run.prompt[:200],
        "seq": run.seq,
        "steps_total": len(run.plan or []),
        "steps_succeeded": run.n_succeeded,
        "steps_failed": run.n_failed,
        "steps_skipped": run.n_skipped,
        "steps_running": run.n_running,
        "cancel_requested": run.cancel_requested_at is not None,
        "created_at": ts(run.created_at),
        "started_at": ts(run.started_at),
        "finished_at": ts(run.finished_at),
    }


def run_summary(*, run_id: uuid.UUID | str) -> dict | None:
    """One run's summary as it is now, or None when the run is gone."""
    run = _with_counts(Run.objects.select_related("owner").filter(pk=run_id)).first()
    return None if run is None else _summary(run)


def run_summaries_for_user(*, user, limit: int = SNAPSHOT_SIZE) -> list[dict]:
    """The newest runs the user may see (staff: everyone's), newest first."""
    return [_summary(run) for run in _with_counts(run_list_for_user(user=user))[:limit]]
