"""What one tick of the multiplexed poller costs: EXPLAIN ANALYZE of its query at 1,000 watched runs.

Usage (PostgreSQL only; a scratch database of its own, created if missing):

    .venv/bin/python -m bench.explain_poll [--db postgres://postgres@127.0.0.1:5432/quikday_explain]
        [--watched 1000] [--other 9000] [--events 20]

Seeds ``watched`` + ``other`` runs with ``events`` events each (raw SQL, for
speed: this is data for a measurement, not application state), ANALYZEs, then
runs realtime.reads.selectors.POLL_SQL — the exact statement the poller sends — for
two ticks: "quiet" (every watched run already read to its head: the common
case) and "busy" (every watched run has 2 new events). Prints the plan and the
median wall time of the selector over 20 ticks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/quikday_explain")
    parser.add_argument("--watched", type=int, default=1000)
    parser.add_argument("--other", type=int, default=9000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = args.db
    os.environ.setdefault("SECRET_KEY", "bench-explain")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")
    _ensure_database(args.db)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from realtime.reads import selectors

    call_command("migrate", verbosity=0)
    watched = _seed(connection, watched=args.watched, other=args.other, events=args.events)

    for name, behind in (("quiet", 0), ("busy", 2)):
        cursors = dict.fromkeys(watched, args.events - behind)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + selectors.POLL_SQL, selectors.poll_params(cursors))
            plan = [row[0] for row in cursor.fetchall()]
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            found = selectors.events_after_cursors(cursors=cursors)
            timings.append((time.perf_counter() - started) * 1000)
        print(f"\n=== {name} tick: {len(cursors)} watched runs, {len(found.events)} events returned ===")
        print("\n".join(plan))
        print(f"selector wall time through Django (median of 20): {statistics.median(timings):.2f} ms")
    sys.stdout.flush()


def _ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _seed(connection, *, watched: int, other: int, events: int) -> list:
    """Fresh runs and events; returns the ids of the watched runs."""
    from django.contrib.auth import get_user_model

    from realtime.models import RunEvent
    from runs.models import Run

    owner, _ = get_user_model().objects.get_or_create(username="bench-explain")
    runs, log = Run._meta.db_table, RunEvent._meta.db_table
    total = watched + other
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {log}, {runs} CASCADE")
        cursor.execute(
            f"INSERT INTO {runs} (id, owner_id, prompt, plan, status, error, created_at, started_at,"
            " updated_at, seq)"
            " SELECT gen_random_uuid(), %s, '', '[]'::jsonb, 'processing', '', now(), now(), now(), %s"
            " FROM generate_series(1, %s)",
            [owner.pk, events, total],
        )
        cursor.execute(
            f"INSERT INTO {log} (run_id, seq, type, payload, ts)"
            " SELECT r.id, s, 'step_started', '{\"step\": {\"index\": 0}}'::jsonb, now()"
            f" FROM {runs} r CROSS JOIN generate_series(1, %s) AS s",
            [events],
        )
        cursor.execute(f"ANALYZE {runs}")
        cursor.execute(f"ANALYZE {log}")
        cursor.execute(f"SELECT id FROM {runs} ORDER BY random() LIMIT %s", [watched])
        return [row[0] for row in cursor.fetchall()]


if __name__ == "__main__":
    main()
