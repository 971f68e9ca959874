"""Celery tasks of the realtime app: thin wrappers around the domain."""

from celery import shared_task

from realtime.events import retention


@shared_task
def prune_run_events(days: float | None = None) -> int:
    """Periodic (Celery beat, hourly): delete events older than the retention period."""
    return retention.prune_run_events(days=days)
