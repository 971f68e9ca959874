"""Hands a committed run to whatever executes runs here.

Celery workers on the full stack; threads of the web process in embedded
mode. Either way only after the creating transaction commits, so a worker
never looks for a run that isn't there yet.
"""

import logging
import threading
import uuid

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from runs.dispatch_retry import DispatchRetrier

logger = logging.getLogger(__name__)


def dispatch_run(*, run_id: uuid.UUID, expires: float | None = None) -> None:
    """Enqueue the run's execution once the current transaction commits.

    ``expires`` (seconds): a Celery message not started by then is dropped, so
    repeated take-over dispatches of a run waiting for a free worker don't pile up.
    """
    if expires is None:
        transaction.on_commit(lambda: _send(run_id))
    else:
        transaction.on_commit(lambda: _send(run_id, expires=expires))


# Each executor takes a run through a function of its own module, named here by
# dotted path (as Django names its backends): the executors import the services,
# which import this module, so importing them here would close a cycle.
ENQUEUERS = {
    "celery": "runs.tasks.enqueue_run",
    "inline": "runs.inline.enqueue_run",
}


def _enqueue(run_id: uuid.UUID, *, expires: float | None = None) -> None:
    """Hand the run to its executor now; raises when the broker refuses."""
    import_string(ENQUEUERS[settings.RUNS_EXECUTOR])(run_id, expires=expires)


def _send(run_id: uuid.UUID, *, expires: float | None = None) -> None:
    try:
        _enqueue(run_id, expires=expires)
    except Exception as error:  # noqa: BLE001 - the broker is unreachable, whatever the client raised
        # The run is committed as queued: this process sends it again in the
        # background (runs/dispatch_retry.py); the reaper is the last resort.
        # One line: during an outage every create would log a traceback.
        logger.warning(
            "could not enqueue run %s (%s); it stays queued and is dispatched again later", run_id, error
        )
        retrier().add(run_id, {} if expires is None else {"expires": expires})


_retrier: DispatchRetrier | None = None
_retrier_lock = threading.Lock()


def retrier() -> DispatchRetrier:
    """This process's retrier of failed sends (made on first use, from the settings)."""
    global _retrier
    with _retrier_lock:
        if _retrier is None:
            _retrier = DispatchRetrier(
                _enqueue,
                first_delay=settings.RUNS_DISPATCH_RETRY_DELAY,
                max_delay=settings.RUNS_DISPATCH_RETRY_MAX_DELAY,
                give_up_after=settings.RUNS_STALE_AFTER_SECONDS,
            )
        return _retrier
