"""Take-over: a run whose executor was lost is handed to a new one within seconds.

A processing run whose lease is free has no live executor (the lease is the
executor's connection's advisory lock, released by PostgreSQL the moment that
connection drops: a SIGKILLed worker, a lost host). Celery would redeliver its
message only after the broker's visibility timeout (an hour), so the sweep
dispatches it again at once; the executor that picks it up resumes it (finished
steps kept, the interrupted step executed again as its next attempt). Each such
message expires after ``RUNS_TAKEOVER_MESSAGE_EXPIRES``, so a run that waits for
a free worker across several sweeps leaves no pile of duplicates behind.

A broker restarted empty (a Redis without persistence) loses the messages of
queued runs too: the sweep keeps a marker key in the broker, and when the marker
is gone, every queued run is dispatched again. Duplicates are harmless either
way: the lease and the run's status make a second delivery a no-op.

Runs nobody takes over (no worker at all) are still failed by the reaper after
``RUNS_STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from runs import selectors, services
from runs.dispatch import dispatch_run
from runs.leases import run_lease

logger = logging.getLogger(__name__)

BROKER_MARKER_KEY = "quikday:broker-marker"


@dataclass
class TakeoverReport:
    taken_over: list[uuid.UUID] = field(default_factory=list)
    redispatched: list[uuid.UUID] = field(default_factory=list)
    released: list[uuid.UUID] = field(default_factory=list)  # waiting runs dispatched


def take_over_runs() -> TakeoverReport:
    """Dispatch again every processing run without a live executor, and every queued run the broker lost."""
    report = TakeoverReport()
    for run_id in selectors.runs_processing_ids():
        with run_lease(run_id) as acquired:
            if not acquired:
                continue  # its executor is alive
        dispatch_run(run_id=run_id, expires=settings.RUNS_TAKEOVER_MESSAGE_EXPIRES)
        report.taken_over.append(run_id)
        logger.warning("run %s has no live executor; dispatched again to take it over", run_id)
    for owner_id in selectors.owners_with_waiting_runs():
        # A hand-over lost with its process (or a limit raised): waiting runs with room go now.
        report.released.extend(services.runs_dispatch_waiting(owner_id=owner_id))
    if broker_lost_its_messages():
        for run_id in selectors.runs_queued_ids():
            dispatch_run(run_id=run_id)
            report.redispatched.append(run_id)
        if report.redispatched:
            logger.warning(
                "the broker lost its messages (restarted empty?); dispatched %d queued run(s) again",
                len(report.redispatched),
            )
    return report


def broker_lost_its_messages() -> bool:
    """True when the broker's marker key is gone (then set again): it lost what it held.

    Also True the first time the sweep ever runs (no marker yet): queued runs are
    then dispatched once more, harmlessly.
    """
    url = settings.CELERY_BROKER_URL or ""
    if settings.RUNS_EXECUTOR != "celery" or not url.startswith(("redis://", "rediss://")):
        return False
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(BROKER_MARKER_KEY, "1", nx=True))
    finally:
        client.close()
