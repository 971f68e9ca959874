"""realtime.db.read: the web process's reads skip Django's per-call health check,
and a connection the server dropped is replaced without the caller noticing."""

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from realtime import db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


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


async def test_reads_reuse_the_database_thread_connection():
    first = await db.read(_backend_pid)
    assert await db.read(_backend_pid) == first  # no reconnect, no close between reads


async def test_a_connection_the_server_dropped_is_replaced_once():
    first = await db.read(_backend_pid)
    _terminate(first)
    again = await db.read(_backend_pid)  # fails on the dead connection, retried on a new one
    assert again != first


async def test_errors_that_are_not_the_connection_reach_the_caller():
    def broken() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM no_such_table")

    with pytest.raises(Exception, match="no_such_table"):
        await db.read(broken)
    assert await db.read(_backend_pid)  # and the connection still works
