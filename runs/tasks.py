"""Celery tasks: thin wrappers that take an id and call the domain."""

import logging
import uuid

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from runs import executor, reaper

logger = logging.getLogger(__name__)


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DatabaseError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def execute_run(run_id: str) -> str:
    """Execute one run. Redelivery is safe: see runs.executor."""
    try:
        parsed = uuid.UUID(str(run_id))
    except ValueError:
        logger.error("execute_run got a malformed run id %r", run_id)
        return "malformed"
    return executor.execute_run(run_id=parsed)


@shared_task
def reap_stuck_runs() -> dict[str, int]:
    """Periodic (Celery beat): fail stuck runs, re-dispatch forgotten ones."""
    report = reaper.reap_stuck_runs()
    return {
        "failed": len(report.failed),
        "redispatched": len(report.redispatched),
        "cancelled": len(report.cancelled),
    }
