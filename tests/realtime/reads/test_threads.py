"""realtime.reads.threads.read: the web process's reads skip Django's per-call health check,
and a connection the server dropped is replaced without the caller noticing."""

import asyncio
import threading

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from realtime.reads import threads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
]  # pg_backend_pid, pg_terminate_backend


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(pid: int) -> None:
    params = settings.DATABASES["default"]
    with psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def _one_read_per_thread() -> list[int]:
    return [await threads.read(_backend_pid) for _ in range(settings.REALTIME_DB_THREADS)]


async def test_reads_run_on_a_few_threads_each_keeping_its_connection():
    first = await _one_read_per_thread()
    assert len(set(first)) == settings.REALTIME_DB_THREADS  # a connection per read thread
    assert await _one_read_per_thread() == first  # no reconnect, no close between reads


async def test_reads_overlap_on_their_threads():
    def slow() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.3)")
        return 1

    began = asyncio.get_running_loop().time()
    assert await asyncio.gather(*(threads.read(slow) for _ in range(3))) == [1, 1, 1]
    assert asyncio.get_running_loop().time() - began < 0.8  # not 3 x 0.3 s one after another


async def test_a_connection_the_server_dropped_is_replaced_once():
    first = await _one_read_per_thread()
    for pid in first:
        _terminate(pid)
    again = await _one_read_per_thread()  # each fails on its dead connection, retried on a new one
    assert not set(again) & set(first)


async def test_errors_that_are_not_the_connection_reach_the_caller():
    def broken() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM no_such_table")

    with pytest.raises(Exception, match="no_such_table"):
        await threads.read(broken)
    assert await threads.read(_backend_pid)  # and the connection still works


def test_each_read_thread_is_one_thread_so_one_connection():
    """A read waits for the one before it on its thread: a second thread would open a second connection."""
    pool = threads._ReadThreads(1)
    (executor,) = pool.executors
    release = threading.Event()
    try:
        first = executor.submit(release.wait, 30)
        second = executor.submit(lambda: threading.current_thread().name)  # queued while the first waits
        release.set()
        assert first.result(timeout=30) is True
        assert second.result(timeout=30) == "realtime-db-0_0"  # the first one's thread
    finally:
        release.set()
        executor.shutdown(wait=True)
