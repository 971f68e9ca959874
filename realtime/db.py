"""Reads of the web process on its database thread, without a health check per read.

Channels' ``database_sync_to_async`` runs ``close_old_connections()`` before and
after every call; with ``CONN_HEALTH_CHECKS`` that is a ``SELECT 1`` before each
read — 13 % of the web process's CPU in a 1,000-client connect storm, and half
the transactions of every poller tick. The database thread's connection is
long-lived, so ``read`` just uses it, and if the server dropped it since (a
restart, an idle timeout) closes it and runs the read once more on a fresh one.
Only for reads: a retried write could apply twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
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


# Built once: a SyncToAsync per call was 2 % of a connect storm's CPU.
_on_database_thread = sync_to_async(_read_on_this_thread, thread_sensitive=True)


async def read(fn: Callable[..., T], /, **kwargs) -> T:
    """``fn(**kwargs)`` on the process's database thread (a selector: reads only)."""
    return await _on_database_thread(fn, kwargs)
