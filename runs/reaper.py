"""The reaper: no run stays processing (or queued) forever.

A processing run with no progress for RUNS_STALE_AFTER_SECONDS whose lease is
free (no live executor holds it) is failed with an error that says why (or
cancelled, when a cancel had been requested and nobody was left to act on it). A
queued run that long untouched was probably never enqueued (the broker was
down at commit): it is dispatched again; the task is idempotent.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from runs import selectors, services
from runs.dispatch import dispatch_run
from runs.leases import run_lease
from runs.services import TransitionError

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    failed: list[uuid.UUID] = field(default_factory=list)
    redispatched: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)


def reap_stuck_runs(*, stale_after: float | None = None) -> ReapReport:
    """Fail stuck processing runs (cancel those asked to cancel); re-dispatch forgotten queued ones."""
    stale_after = settings.RUNS_STALE_AFTER_SECONDS if stale_after is None else stale_after
    since = timezone.now() - timedelta(seconds=stale_after)
    report = ReapReport()
    for run_id in selectors.runs_processing_without_progress(since=since):
        with run_lease(run_id) as acquired:
            if not acquired:
                continue  # a live executor holds it: slow, not stuck
            if selectors.run_cancel_requested(run_id=run_id):
                # Its owner asked to cancel it: honour that rather than report a failure.
                try:
                    services.run_cancel_finish(run_id=run_id)
                except TransitionError:
                    continue
                report.cancelled.append(run_id)
                logger.warning("cancelled stuck run %s (a cancel was requested)", run_id)
                continue
            try:
                services.run_fail(
                    run_id=run_id,
                    error=(
                        f"no progress for more than {stale_after:g} seconds; the worker executing it was lost"
                    ),
                )
            except TransitionError:
                continue  # finished meanwhile
            report.failed.append(run_id)
            logger.warning("reaped stuck run %s", run_id)
    for run_id in selectors.runs_queued_without_progress(since=since):
        dispatch_run(run_id=run_id)
        report.redispatched.append(run_id)
    for owner_id in selectors.owners_with_waiting_runs():
        report.redispatched.extend(services.runs_dispatch_waiting(owner_id=owner_id))
    return report
