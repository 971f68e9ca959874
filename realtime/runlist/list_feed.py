"""The user-level stream's feed: after a run changes, its new summary goes to the run lists.

realtime.signals calls ``note_change`` when a run is created and whenever a
change of it (or of a step) is recorded in the log. Once the transaction
commits, the run's summary is read (so it is the newest state, whatever else
committed meanwhile) and handed to the publisher for the owner's and staff's
list groups. Once per transaction and run: a cancel that skips five steps
moves the list's line once. Clients keep per run the summary with the
highest seq, so a late or repeated summary never moves a line back.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.db import connection, transaction

from realtime.events import publisher
from realtime.reads import summaries
from server import upstream

logger = logging.getLogger(__name__)


def note_change(*, run_id: uuid.UUID | str) -> None:
    """Publish the run's summary after the current transaction commits (once per transaction)."""
    key = str(run_id)
    # Django's queue of on-commit callbacks is private (server.upstream "django-on-commit-queue"):
    # on a Django it was not read against, a summary goes out per change (clients keep the newest).
    if (
        connection.in_atomic_block
        and upstream.usable("django-on-commit-queue")
        and any(getattr(callback, "summary_of", None) == key for _, callback, _ in connection.run_on_commit)
    ):
        return

    # A function, not a functools.partial: a robust callback that raises is logged
    # by its __qualname__, which a partial lacks (the AttributeError then failed the writer).
    def callback() -> None:
        publish_summary(run_id=key)

    callback.summary_of = key
    transaction.on_commit(callback, robust=True)


def publish_summary(*, run_id: str) -> bool:
    """Read the run's summary now and publish it. Never raises; False when nothing went out."""
    if settings.REALTIME_MODE == "poll":
        return False  # list streams re-read the summaries themselves in polling mode
    try:
        summary = summaries.run_summary(run_id=run_id)
    except Exception as error:  # noqa: BLE001 - a feed must never fail the writer
        logger.warning("summary of run %s not read (%s); list streams re-read it", run_id, error)
        return False
    return summary is not None and publisher.publish_summary(summary)
