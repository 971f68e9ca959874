"""Celery tasks: thin wrappers that take an id and call the domain."""

import logging
import uuid

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from runs import executor, reaper, takeover

logger = logging.getLogger(__name__)

BUSY_RETRIES = 3
BUSY_RETRY_SECONDS = 5
DATABASE_RETRY_MAX_SECONDS = 30


def enqueue_run(run_id: uuid.UUID, *, expires: float | None = None) -> None:
    """runs.dispatch's way in: send the run's task to the broker (raises when it refuses)."""
    execute_run.apply_async((str(run_id),), expires=expires)


@shared_task(acks_late=True, reject_on_worker_lost=True, max_retries=8, bind=True)
def execute_run(self, run_id: str, after_error: bool = False) -> str:
    """Execute one run. Redelivery is safe: see runs.executor.

    ``after_error``: this is a retry after a database error of this task (not a
    lost executor), so the interrupted step's attempt does not count towards
    RUNS_MAX_STEP_ATTEMPTS.
    """
    try:
        parsed = uuid.UUID(str(run_id))
    except ValueError:
        logger.error("execute_run got a malformed run id %r", run_id)
        return "malformed"
    try:
        # The worker's node name (``-n``, default celery@<host>): who executes each step.
        worker = self.request.hostname or ""
        outcome = executor.execute_run(run_id=parsed, after_error=after_error, worker=worker)
    except (DatabaseError, InterfaceError) as error:
        # The database went away mid-run (a restart, a terminated connection): resume shortly.
        countdown = min(DATABASE_RETRY_MAX_SECONDS, 2**self.request.retries)
        raise self.retry(
            exc=error, countdown=countdown, args=(str(parsed),), kwargs={"after_error": True}
        ) from None
    if outcome == executor.Outcome.SKIPPED_BUSY and self.request.retries < BUSY_RETRIES:
        # Right after a pool process is killed its message comes back at once,
        # possibly before PostgreSQL has noticed the dead connection and freed
        # its lease: look again shortly rather than leave the run to the reaper.
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return outcome


@shared_task
def reap_stuck_runs() -> dict[str, int]:
    """Periodic (Celery beat): fail stuck runs, re-dispatch forgotten ones."""
    report = reaper.reap_stuck_runs()
    return {
        "failed": len(report.failed),
        "redispatched": len(report.redispatched),
        "cancelled": len(report.cancelled),
    }


@shared_task
def take_over_runs() -> dict[str, int]:
    """Periodic (Celery beat, every few seconds): runs whose executor was lost, messages the broker lost."""
    report = takeover.take_over_runs()
    return {"taken_over": len(report.taken_over), "redispatched": len(report.redispatched)}
