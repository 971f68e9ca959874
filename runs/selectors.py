"""Reads of runs and steps. Views, consumers and tasks build no querysets."""

import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from rest_framework.authtoken.models import Token

from runs.models import Run, RunStatus, Step


def may_see_run(*, user_id: int | None, is_staff: bool, owner_id: int) -> bool:
    """Who sees a run: its owner, and staff (``_visible_runs`` is the same rule as a queryset)."""
    return is_staff or owner_id == user_id


def _visible_runs(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    runs = Run.objects.all()
    if not user.is_staff:
        runs = runs.filter(owner=user)
    return runs


def run_list_for_user(*, user: AbstractBaseUser, status: str | None = None) -> QuerySet[Run]:
    """The runs a user may see, newest first; staff see all."""
    runs = _visible_runs(user).select_related("owner").order_by("-created_at")
    if status:
        runs = runs.filter(status=status)
    return runs


def run_get_for_user(*, user: AbstractBaseUser, run_id: uuid.UUID) -> Run | None:
    """A run with its steps, or None when it doesn't exist or isn't the user's."""
    return _visible_runs(user).prefetch_related("steps").filter(pk=run_id).first()


def run_seq_for_user(*, user: AbstractBaseUser, run_id: uuid.UUID) -> int | None:
    """The seq of a run's latest event, or None when it doesn't exist or isn't the user's."""
    return _visible_runs(user).filter(pk=run_id).values_list("seq", flat=True).first()


def run_get(*, run_id: uuid.UUID) -> Run | None:
    return Run.objects.filter(pk=run_id).first()


def run_steps(*, run_id: uuid.UUID) -> list[Step]:
    return list(Step.objects.filter(run_id=run_id).order_by("index"))


def run_cancel_requested(*, run_id: uuid.UUID) -> bool:
    return Run.objects.filter(pk=run_id, cancel_requested_at__isnull=False).exists()


def runs_without_progress(*, status: str, since: datetime) -> list[uuid.UUID]:
    """Runs in ``status`` with no run or step change since ``since``, oldest first."""
    recent_step = Step.objects.filter(run=OuterRef("pk")).filter(
        Q(started_at__gte=since) | Q(finished_at__gte=since)
    )
    return list(
        Run.objects.filter(status=status, updated_at__lt=since)
        .filter(~Exists(recent_step))
        .order_by("updated_at")
        .values_list("pk", flat=True)
    )


def runs_processing_without_progress(*, since: datetime) -> list[uuid.UUID]:
    return runs_without_progress(status=RunStatus.PROCESSING, since=since)


def runs_queued_without_progress(*, since: datetime) -> list[uuid.UUID]:
    """Dispatched queued runs untouched since ``since`` (a waiting one is not late: it waits its turn)."""
    dispatched = set(runs_queued_ids())
    return [
        run_id
        for run_id in runs_without_progress(status=RunStatus.QUEUED, since=since)
        if run_id in dispatched
    ]


def owners_with_waiting_runs() -> list[int]:
    """Users with queued runs not yet dispatched (runs.services' fair execution)."""
    waiting = Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True)
    return list(waiting.values_list("owner_id", flat=True).distinct().order_by("owner_id"))


def runs_processing_ids() -> list[uuid.UUID]:
    """Every processing run, least recently changed first."""
    return list(
        Run.objects.filter(status=RunStatus.PROCESSING).order_by("updated_at").values_list("pk", flat=True)
    )


def runs_queued_ids() -> list[uuid.UUID]:
    """Every queued run handed to the executor, oldest first (not those waiting their turn)."""
    queued = Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=False)
    return list(queued.order_by("created_at").values_list("pk", flat=True))


def run_counts_by_status() -> dict[str, int]:
    """How many runs are in each status (every status present, zero included)."""
    counts = dict.fromkeys(RunStatus.values, 0)
    for status, count in Run.objects.order_by().values_list("status").annotate(n=Count("pk")):
        counts[status] = count
    return counts


def api_token_for_user(*, user: AbstractBaseUser) -> Token | None:
    """The user's API token, if they have one."""
    return Token.objects.filter(user=user).first()
