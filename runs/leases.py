"""Execution leases: at most one live executor per run, across processes.

On PostgreSQL a lease is a session-level advisory lock on the executor's
connection. If the executor dies (SIGKILL, lost host) its connection drops and
PostgreSQL releases the lock, so a redelivered task or the reaper can tell a
dead executor from a live one. Elsewhere (SQLite, embedded mode, one process)
a process-local set does the same job.
"""

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_local_held: set[uuid.UUID] = set()
_local_lock = threading.Lock()


def _lock_key(run_id: uuid.UUID) -> int:
    return int.from_bytes(uuid.UUID(str(run_id)).bytes[:8], "big", signed=True)


@contextmanager
def run_lease(run_id: uuid.UUID) -> Iterator[bool]:
    """Try to take the run's lease without waiting; yield whether it was taken."""
    run_id = uuid.UUID(str(run_id))
    if connection.vendor == "postgresql":
        key = _lock_key(run_id)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            acquired = cursor.fetchone()[0]
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    with _local_lock:
        acquired = run_id not in _local_held
        if acquired:
            _local_held.add(run_id)
    try:
        yield acquired
    finally:
        if acquired:
            with _local_lock:
                _local_held.discard(run_id)
