"""Reads of the web process, on a few threads of their own, without a health check per read.

Channels' ``database_sync_to_async`` runs every call on the process's one
sync thread and calls ``close_old_connections()`` before and after it; with
``CONN_HEALTH_CHECKS`` that is a ``SELECT 1`` before each read (a large share
of a connect storm's CPU, docs/benchmarks.md), and half the transactions of
every poller tick. And on one thread, every connect's snapshot query waits for
the one before it, most of that wait PostgreSQL's own time.

``read`` runs a selector on one of REALTIME_DB_THREADS threads (each with its
own long-lived connection, in turn), so reads overlap; if the server dropped
the connection since its last use (a restart, an idle timeout), it is closed
and the read runs once more on a fresh one. Only for reads: a retried write
could apply twice.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def _read_on_this_thread(fn: Callable[..., T], kwargs: dict) -> T:
    try:
        return fn(**kwargs)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return fn(**kwargs)


class _ReadThreads:
    """REALTIME_DB_THREADS single-thread executors, used in turn (created on first use)."""

    def __init__(self, count: int) -> None:
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"realtime-db-{i}") for i in range(count)
        ]
        self._turn = itertools.cycle(self.executors)

    def next(self) -> ThreadPoolExecutor:
        return next(self._turn)


_threads: _ReadThreads | None = None
_threads_guard = threading.Lock()


def _read_threads() -> _ReadThreads:
    global _threads
    if _threads is None:
        with _threads_guard:
            if _threads is None:
                _threads = _ReadThreads(settings.REALTIME_DB_THREADS)
    return _threads


async def read(fn: Callable[..., T], /, **kwargs) -> T:
    """``fn(**kwargs)`` (a selector: reads only) on one of the process's read threads."""
    executor = _read_threads().next()
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(_read_on_this_thread, fn, kwargs)
    )
