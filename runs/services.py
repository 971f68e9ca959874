"""The only writers of run and step state (and of a user's API token, at the end).

Each function is one state change: keyword-only, atomic, and refusing an
illegal transition with TransitionError. Every write names its fields
(``update_fields``), so a stale in-memory copy never overwrites what another
writer changed (the run's event counter above all).
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.authtoken.models import Token

from runs.dispatch import dispatch_run
from runs.models import RUN_TERMINAL, Run, RunStatus, Step, StepStatus
from runs.tools import PlanError, validate_plan
from runs.validation import prompt_problem

RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.PROCESSING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.PROCESSING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED}),
    StepStatus.RUNNING: frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED}),
    StepStatus.SUCCEEDED: frozenset(),
    StepStatus.FAILED: frozenset(),
    StepStatus.SKIPPED: frozenset(),
}


class TransitionError(Exception):
    """A state change the current status does not allow."""

    def __init__(self, message: str, *, current: str, requested: str):
        super().__init__(message)
        self.message = message
        self.current = current
        self.requested = requested


def check_run_transition(current: str, requested: str) -> None:
    """Raise TransitionError unless a run may go from ``current`` to ``requested``."""
    if requested not in RUN_TRANSITIONS[current]:
        raise TransitionError(
            f"a run cannot go from {current} to {requested}", current=current, requested=requested
        )


def check_step_transition(current: str, requested: str) -> None:
    """Raise TransitionError unless a step may go from ``current`` to ``requested``."""
    if requested not in STEP_TRANSITIONS[current]:
        raise TransitionError(
            f"a step cannot go from {current} to {requested}", current=current, requested=requested
        )


# Every transition reads and locks its rows with these hand-written statements: building
# and compiling the equivalent querysets cost more CPU than the rest of a transition.
_RUN, _STEP = Run._meta, Step._meta


def _for_update() -> str:
    return " FOR UPDATE" if connection.features.has_select_for_update else ""  # SQLite: whole-file lock


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _locked_run(run_id: uuid.UUID) -> Run:
    pk = _RUN.pk.get_db_prep_value(run_id, connection)
    sql = f"SELECT * FROM {_q(_RUN.db_table)} WHERE {_q(_RUN.pk.column)} = %s{_for_update()}"  # noqa: S608
    for run in Run.objects.raw(sql, [pk]):
        return run
    raise Run.DoesNotExist(f"run {run_id} does not exist")


def _set_run_status(run: Run, status: str, **fields: Any) -> Run:
    check_run_transition(run.status, status)
    run.status = status
    for name, value in fields.items():
        setattr(run, name, value)
    run.save(update_fields=["status", "updated_at", *fields])
    return run


# --- Quotas ---------------------------------------------------------------------

QUOTA_WINDOW = timedelta(seconds=60)


class QuotaExceeded(Exception):
    """A create over the owner's quota: ``limit`` names which; ``retry_after``: seconds to wait."""

    def __init__(self, message: str, *, limit: str, retry_after: int):
        super().__init__(message)
        self.message = message
        self.limit = limit
        self.retry_after = retry_after


def check_run_quota(*, owner: AbstractBaseUser) -> None:
    """Raise QuotaExceeded if ``owner`` may not create a run now (staff never are refused).

    run_create calls it under the owner's row lock, so concurrent creates of
    one user are counted one after the other; a form may call it first, to
    say so next to its fields.
    """
    if owner.is_staff:
        return
    max_active = settings.RUNS_MAX_ACTIVE_PER_USER
    if max_active:
        active = Run.objects.filter(owner=owner, status__in=(RunStatus.QUEUED, RunStatus.PROCESSING)).count()
        if active >= max_active:
            raise QuotaExceeded(
                f"you have {active} runs queued or processing, the most allowed at once ({max_active});"
                " create more when one of them ends",
                limit="active_runs",
                retry_after=settings.RUNS_ACTIVE_RETRY_AFTER_SECONDS,
            )
    max_creates = settings.RUNS_MAX_CREATES_PER_MINUTE
    if max_creates:
        since = timezone.now() - QUOTA_WINDOW
        recent = list(
            Run.objects.filter(owner=owner, created_at__gt=since)
            .order_by("-created_at")
            .values_list("created_at", flat=True)[:max_creates]
        )
        if len(recent) >= max_creates:
            # The oldest of the last max_creates leaves the window first.
            wait = (recent[-1] - since).total_seconds()
            raise QuotaExceeded(
                f"you created {max_creates} runs in the last minute, the most allowed;"
                f" try again in {math.ceil(wait)} s",
                limit="creates_per_minute",
                retry_after=max(1, math.ceil(wait)),
            )


def _lock_user(owner_id: int) -> None:
    """Lock the owner's row until commit: their creates and hand-overs are counted one at a time.

    Lock order: a run's row (when the caller holds one), then its owner's row;
    the owner's waiting runs are then taken with SKIP LOCKED, never waited for.
    """
    users = get_user_model()._default_manager
    list(users.select_for_update().filter(pk=owner_id).values_list("pk", flat=True))


# --- Fair execution ---------------------------------------------------------------


def _dispatch_waiting(owner_id: int) -> list[uuid.UUID]:
    """Hand the owner's oldest waiting runs to the executor while fewer than
    RUNS_MAX_INFLIGHT_PER_USER of theirs are in flight; the caller holds the owner's row lock.

    In flight: processing, or queued and dispatched. A user's backlog so waits
    in the database, not in the broker's FIFO queue, where it would be ahead
    of every other user's runs.
    """
    limit = settings.RUNS_MAX_INFLIGHT_PER_USER
    waiting = Run.objects.filter(owner_id=owner_id, status=RunStatus.QUEUED, dispatched_at__isnull=True)
    if limit:
        in_flight = Run.objects.filter(owner_id=owner_id).filter(
            Q(status=RunStatus.PROCESSING) | Q(status=RunStatus.QUEUED, dispatched_at__isnull=False)
        )
        room = limit - in_flight.count()
        if room <= 0:
            return []
        waiting = waiting.order_by("created_at")[:room]
    else:
        waiting = waiting.order_by("created_at")
    run_ids = list(waiting.select_for_update(skip_locked=True).values_list("pk", flat=True))
    if run_ids:
        Run.objects.filter(pk__in=run_ids).update(dispatched_at=timezone.now())
        for run_id in run_ids:
            dispatch_run(run_id=run_id)
    return run_ids


def _hand_over(owner_id: int) -> None:
    """A run of the owner ended: dispatch their next waiting run, if any."""
    _lock_user(owner_id)
    _dispatch_waiting(owner_id)


@transaction.atomic
def runs_dispatch_waiting(*, owner_id: int) -> list[uuid.UUID]:
    """The sweeps' way in: dispatch an owner's waiting runs that have room (a hand-over lost
    with its process, a limit raised). Returns the runs dispatched."""
    _lock_user(owner_id)
    return _dispatch_waiting(owner_id)


# --- Runs -----------------------------------------------------------------------


def run_create(*, owner: AbstractBaseUser, steps: Any, prompt: str = "") -> Run:
    """Validate a plan, create a queued run and enqueue it once committed.

    Raises runs.tools.PlanError when the plan cannot run or the prompt cannot be
    stored (field "prompt"), QuotaExceeded when the owner is over a quota;
    nothing is created then.
    """
    prompt = prompt or ""
    problem = prompt_problem(prompt)
    if problem:
        raise PlanError(problem, field="prompt")
    plan = validate_plan(steps, max_steps=settings.RUNS_MAX_STEPS)
    with transaction.atomic():
        _lock_user(owner.pk)
        check_run_quota(owner=owner)
        run = Run.objects.create(owner=owner, prompt=prompt, plan=plan)
        if run.id in _dispatch_waiting(owner.pk):
            run.refresh_from_db(fields=["dispatched_at"])
    return run


def run_rerun(*, run: Run, owner: AbstractBaseUser) -> Run:
    """Create a new run with the same prompt and plan as ``run``."""
    return run_create(owner=owner, steps=run.plan, prompt=run.prompt)


@transaction.atomic
def run_start(*, run_id: uuid.UUID) -> Run | None:
    """queued → processing. Returns None when the run is no longer queued."""
    run = _locked_run(run_id)
    if run.status != RunStatus.QUEUED:
        return None
    return _set_run_status(run, RunStatus.PROCESSING, started_at=timezone.now())


@transaction.atomic
def run_succeed(*, run_id: uuid.UUID, output: Any) -> Run:
    """processing → succeeded, with the step outputs."""
    run = _locked_run(run_id)
    return _end(run, RunStatus.SUCCEEDED, output=output, finished_at=timezone.now())


def _end(run: Run, status: str, **fields: Any) -> Run:
    """A terminal transition; the owner's next waiting run is dispatched in the same transaction."""
    _set_run_status(run, status, **fields)
    _hand_over(run.owner_id)
    return run


@transaction.atomic
def run_fail(*, run_id: uuid.UUID, error: str) -> Run:
    """→ failed: the steps not yet finished are skipped first, then the run fails."""
    run = _locked_run(run_id)
    check_run_transition(run.status, RunStatus.FAILED)
    _finish_open_steps(run, error=error)
    return _end(run, RunStatus.FAILED, error=error, finished_at=timezone.now())


@transaction.atomic
def run_cancel(*, run_id: uuid.UUID) -> Run:
    """Cancel a run: a queued one at once, a processing one before its next step.

    Raises TransitionError for a finished run.
    """
    run = _locked_run(run_id)
    if run.status in RUN_TERMINAL:
        raise TransitionError(
            f"the run has already {run.status}; it cannot be cancelled",
            current=run.status,
            requested=RunStatus.CANCELLED,
        )
    if run.status == RunStatus.QUEUED:
        return _cancel_now(run)
    if run.cancel_requested_at is None:
        run.cancel_requested_at = timezone.now()
        run.save(update_fields=["cancel_requested_at", "updated_at"])
    return run


@transaction.atomic
def run_cancel_finish(*, run_id: uuid.UUID) -> Run:
    """processing → cancelled, once the executor sees the cancel request."""
    return _cancel_now(_locked_run(run_id))


def _cancel_now(run: Run) -> Run:
    check_run_transition(run.status, RunStatus.CANCELLED)
    _finish_open_steps(run, error="")
    return _end(run, RunStatus.CANCELLED, finished_at=timezone.now())


@transaction.atomic
def run_delete(*, run_id: uuid.UUID) -> None:
    """Delete a run, its steps and its events (an operator's delete in the admin).

    Allowed in any status. Its watchers are told once the delete commits
    (realtime's post_delete receiver); an executor still working on it finds
    every further change refused (the run does not exist) and stops quietly.
    """
    run = _locked_run(run_id)
    owner_id, was_open = run.owner_id, not run.is_terminal
    run.delete()
    if was_open:
        _hand_over(owner_id)


def _finish_open_steps(run: Run, *, error: str) -> None:
    """Skip the running step and create the plan's remaining steps as skipped.

    Ordered by index, so their events come out in plan order, before the
    run's own terminal event.
    """
    now = timezone.now()
    existing = {step.index: step for step in Step.objects.select_for_update().filter(run=run)}
    for index, spec in enumerate(run.plan):
        step = existing.get(index)
        if step is None:
            Step.objects.create(
                run=run,
                index=index,
                tool=spec["tool"],
                args=spec.get("args", {}),
                status=StepStatus.SKIPPED,
                finished_at=now,
            )
        elif not step.is_terminal:
            check_step_transition(step.status, StepStatus.SKIPPED)
            step.status = StepStatus.SKIPPED
            step.error = error
            step.finished_at = now
            step.save(update_fields=["status", "error", "finished_at"])


# --- Steps ----------------------------------------------------------------------


def _refuse_unless_processing(status: str, *, requested: str) -> None:
    """After the run's terminal event nothing may follow it, so a step change of
    a run that ended meanwhile (an operator, the reaper) is refused here, at
    the only writers, whoever asks."""
    if status != RunStatus.PROCESSING:
        raise TransitionError(
            f"a step cannot become {requested} while the run is {status}",
            current=status,
            requested=requested,
        )


@transaction.atomic
def step_start(*, run_id: uuid.UUID, index: int, worker: str = "") -> Step | None:
    """Create step ``index`` of a processing run as running (its plan entry),
    executed by ``worker`` (the executing process's name).

    Returns None, starting nothing, when a cancel of the run has been asked
    for: no step starts after that (the executor then finishes the cancel).
    """
    status, cancel_requested_at, plan = _lock_run_reading(run_id, "status", "cancel_requested_at", "plan")
    return _start_step(
        run_id,
        index,
        worker,
        status=status,
        cancel_requested_at=cancel_requested_at,
        plan=_plan_from_db(plan),
    )


def _plan_from_db(value: Any) -> list:
    """A run's plan read by a hand-written statement, as the ORM would give it."""
    return _RUN.get_field("plan").from_db_value(value, None, connection)


def _start_step(
    run_id: uuid.UUID, index: int, worker: str, *, status: str, cancel_requested_at: Any, plan: list
) -> Step | None:
    """step_start's write, the run's row already locked and read by the caller."""
    _refuse_unless_processing(status, requested=StepStatus.RUNNING)
    if cancel_requested_at is not None:
        return None
    spec = plan[index]
    return Step.objects.create(
        run_id=run_id,
        index=index,
        tool=spec["tool"],
        args=spec.get("args", {}),
        status=StepStatus.RUNNING,
        started_at=timezone.now(),
        worker=worker,
    )


def _lock_run_reading(run_id: uuid.UUID, *names: str) -> tuple:
    """Lock the run's row, reading only the columns of ``names`` (as the database gives them)."""
    pk = _RUN.pk.get_db_prep_value(run_id, connection)
    columns = ", ".join(_q(_RUN.get_field(name).column) for name in names)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {_q(_RUN.db_table)} WHERE {_q(_RUN.pk.column)} = %s{_for_update()}",  # noqa: S608
            [pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    return row


def _lock_open_run(run_id: uuid.UUID, *, requested: str) -> None:
    """Lock the run's row, reading only its status (its plan and output can be large);
    refuse unless the run is processing."""
    (status,) = _lock_run_reading(run_id, "status")
    _refuse_unless_processing(status, requested=requested)


def _locked_step(run_id: uuid.UUID, index: int, *, requested: str, with_plan: bool = False) -> Step:
    """The step, with the run's row and then the step's locked, in one statement;
    refused unless the run is processing.

    Lock order everywhere: the run's row first, then its steps (a statement's
    row locks are taken in the order its FROM names the tables). The event log
    takes the run's row lock too, so this order cannot deadlock. ``with_plan``:
    the step also carries the run's ``run_cancel_requested_at`` and ``run_plan``
    (as the database gives it), for starting the next step under the same lock.
    """
    pk = _RUN.pk.get_db_prep_value(run_id, connection)
    run_status = _q(_RUN.get_field("status").column)
    run_extra = ""
    if with_plan:
        cancel, plan = _q(_RUN.get_field("cancel_requested_at").column), _q(_RUN.get_field("plan").column)
        run_extra = f", r.{cancel} AS run_cancel_requested_at, r.{plan} AS run_plan"
    sql = (
        f"SELECT r.{run_status} AS run_status{run_extra}, s.* FROM {_q(_RUN.db_table)} r"  # noqa: S608
        f" JOIN {_q(_STEP.db_table)} s ON s.{_q(_STEP.get_field('run').column)} = r.{_q(_RUN.pk.column)}"
        f" WHERE r.{_q(_RUN.pk.column)} = %s AND s.{_q(_STEP.get_field('index').column)} = %s{_for_update()}"
    )
    for step in Step.objects.raw(sql, [pk, index]):
        _refuse_unless_processing(step.run_status, requested=requested)
        return step
    _lock_open_run(run_id, requested=requested)  # no such run, or it ended: say which
    raise Step.DoesNotExist(f"run {run_id} has no step {index}")


@transaction.atomic
def step_succeed(*, run_id: uuid.UUID, index: int, output: Any) -> Step:
    """running → succeeded with the tool's output."""
    return _succeed_step(_locked_step(run_id, index, requested=StepStatus.SUCCEEDED), output)


def _succeed_step(step: Step, output: Any) -> Step:
    check_step_transition(step.status, StepStatus.SUCCEEDED)
    step.status = StepStatus.SUCCEEDED
    step.output = output
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "output", "finished_at"])
    return step


# The executor's transitions that follow one another with nothing in between (no
# tool call, no wait): each pair is one transaction, so its events commit, and
# reach watchers and run lists, together — in the same order, each once — for
# one commit, one lock and one run-list summary instead of two.


@transaction.atomic
def run_start_with_first_step(*, run_id: uuid.UUID, worker: str = "") -> Step | None:
    """run_start, then step_start of step 0, in one transaction: the started step.

    Returns None, changing nothing, when the run is no longer queued.
    """
    run = _locked_run(run_id)
    if run.status != RunStatus.QUEUED:
        return None
    _set_run_status(run, RunStatus.PROCESSING, started_at=timezone.now())
    # The run's row is locked and was just read: no cancel can have been asked since.
    return _start_step(
        run_id, 0, worker, status=run.status, cancel_requested_at=run.cancel_requested_at, plan=run.plan
    )


@transaction.atomic
def step_succeed_and_start_next(
    *, run_id: uuid.UUID, index: int, output: Any, worker: str = ""
) -> Step | None:
    """step_succeed of step ``index``, then step_start of step ``index + 1``, in one transaction.

    Returns the started step, or None when a cancel of the run has been asked
    for: step ``index`` still succeeds, the next is not started (the executor
    then finishes the cancel).
    """
    step = _locked_step(run_id, index, requested=StepStatus.SUCCEEDED, with_plan=True)
    _succeed_step(step, output)
    return _start_step(
        run_id,
        index + 1,
        worker,
        status=step.run_status,
        cancel_requested_at=step.run_cancel_requested_at,
        plan=_plan_from_db(step.run_plan),
    )


@transaction.atomic
def step_succeed_and_run_succeed(*, run_id: uuid.UUID, index: int, output: Any, run_output: Any) -> Run:
    """step_succeed of the last step ``index``, then run_succeed with ``run_output``, in one transaction."""
    _succeed_step(_locked_step(run_id, index, requested=StepStatus.SUCCEEDED), output)
    return _end(_locked_run(run_id), RunStatus.SUCCEEDED, output=run_output, finished_at=timezone.now())


@transaction.atomic
def step_fail(*, run_id: uuid.UUID, index: int, error: str) -> Step:
    """running → failed; the run then fails with the same error, the rest skipped."""
    step = _locked_step(run_id, index, requested=StepStatus.FAILED)
    check_step_transition(step.status, StepStatus.FAILED)
    step.status = StepStatus.FAILED
    step.error = error
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])
    # People count steps from 1 (the pages' step column, the form's rows); `index` stays 0-based.
    run_fail(run_id=run_id, error=f"step {index + 1} ({step.tool}) failed: {error}")
    return step


@transaction.atomic
def step_retry(*, run_id: uuid.UUID, index: int, worker: str = "") -> Step:
    """A running step whose executor was lost is started again: one more attempt.

    Its status stays running, ``started_at`` and ``worker`` are the new
    attempt's and ``attempts`` one more: realtime's signals log it as a
    ``step_retried`` event.
    """
    step = _locked_step(run_id, index, requested=StepStatus.RUNNING)
    if step.status != StepStatus.RUNNING:
        raise TransitionError(
            f"only a running step is retried, not a {step.status} one",
            current=step.status,
            requested=StepStatus.RUNNING,
        )
    step.attempts += 1
    step.started_at = timezone.now()
    step.worker = worker
    step.save(update_fields=["attempts", "started_at", "worker"])
    return step


# --- API tokens: one per user (DRF's Token), its key shown once -----------------------


class TokenExistsError(Exception):
    """The user has an API token already: replacing it is api_token_regenerate's, explicitly."""


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> Token:
    """The user's first API token; refused when they have one (another tab made it, say)."""
    token, created = Token.objects.get_or_create(user=user)
    if not created:
        raise TokenExistsError("you have an API token already; regenerate it to get a new key")
    return token


@transaction.atomic
def api_token_regenerate(*, user: AbstractBaseUser) -> Token:
    """Revoke the user's API token (if any) and create another: the old key stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def api_token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's API token; False when they had none."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)
