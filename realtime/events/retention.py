"""Retention of the event log: events older than the retention period go.

The log is what resume and gap fill read; the run's snapshot stays the truth,
so a client whose ``since`` predates the retained log gets ``recovered:
false`` and the snapshot. Called by the ``prune_run_events`` Celery task
(beat, hourly) and management command.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from realtime.models import RunEvent
from realtime.reads import selectors

logger = logging.getLogger(__name__)

# Deleted in batches so one prune never holds a huge transaction or lock set.
BATCH_SIZE = 5000


def prune_run_events(*, days: float | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Delete events recorded more than ``days`` ago (default: the setting); return how many.

    An event's ``ts`` is taken under its run's row lock, so within a run it
    grows with ``seq``: what is left of a run's log is always a suffix of it,
    never a log with a hole in the middle.
    """
    days = settings.REALTIME_EVENT_RETENTION_DAYS if days is None else days
    if days < 0:
        raise ValueError("the retention period cannot be negative")
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        ids = selectors.event_ids_older_than(cutoff=cutoff, limit=batch_size)
        if not ids:
            break
        deleted += RunEvent.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch_size:
            break
    if deleted:
        logger.info("pruned %d run event(s) older than %g day(s)", deleted, days)
    return deleted
