"""Embedded mode: runs executed in threads of the web process (no broker)."""

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

logger = logging.getLogger(__name__)

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="run")


def submit(run_id: uuid.UUID) -> None:
    """Execute the run on a background thread of this process."""
    _pool.submit(_execute, run_id)


def _execute(run_id: uuid.UUID) -> None:
    from runs.executor import execute_run

    try:
        execute_run(run_id=run_id)
    except Exception:
        logger.exception("run %s crashed in embedded mode", run_id)
    finally:
        close_old_connections()
