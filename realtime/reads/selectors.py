"""Reads of the event log and of consistent run snapshots.

``run_snapshot`` is the connect read through the ORM and RunSerializer: the
reference, and what SQLite uses; on PostgreSQL ``connect_state`` takes its fast
path, realtime.reads.fast_snapshot, which must answer the same.
"""

import json
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q, prefetch_related_objects
from django.utils import timezone

from realtime.models import RunEvent
from realtime.protocol.frames import TS_FORMAT_POSTGRES, format_ts
from realtime.reads.connect_state import ConnectState, Refused, Snapshot
from realtime.reads.fast_snapshot import fast_snapshot
from runs.models import Run
from runs.selectors import may_see_run
from runs.serializers import RunSerializer


def run_snapshot(*, run_id: uuid.UUID, user=None) -> Snapshot | Refused:
    """The run as the API shows it, with the seq of the last event it includes.

    Run and steps are read from one database snapshot (REPEATABLE READ on
    PostgreSQL), so the state and the seq always agree: every writer holds the
    run's row lock until commit, so commits are a prefix of seq. With ``user``
    the same read checks access and answers Refused.FORBIDDEN instead; a
    missing run is Refused.MISSING.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        run = Run.objects.select_related("owner").filter(pk=run_id).first()
        if run is None:
            return Refused.MISSING
        viewer = None if user is None else {"user_id": user.pk, "is_staff": user.is_staff}
        if viewer is not None and not may_see_run(**viewer, owner_id=run.owner_id):
            return Refused.FORBIDDEN
        prefetch_related_objects([run], "steps")
        return Snapshot(seq=run.seq, run=RunSerializer(run).data, terminal=run.is_terminal)


def connect_state(
    *, run_id: uuid.UUID, since: int | None, user=None, token_key: str | None = None
) -> ConnectState | Refused:
    """Snapshot plus, when ``since`` is given and the log still holds since+1, the backlog.

    With ``user`` (or ``token_key``, a token client's key, resolved here) access
    is checked in the same read and a ``Refused`` comes back instead. On
    PostgreSQL the token, the access check, the run and its steps are one
    statement (realtime.reads.fast_snapshot); elsewhere the ORM.
    """
    if connection.vendor == "postgresql":
        snapshot = fast_snapshot(run_id=run_id, user=user, token_key=token_key)
    else:
        if token_key is not None:
            user = user_for_token(key=token_key)
            if user is None:
                return Refused.UNAUTHENTICATED
        snapshot = run_snapshot(run_id=run_id, user=user)
    if not isinstance(snapshot, Snapshot):
        return snapshot
    if since is None or since < 0 or since > snapshot.seq:
        return ConnectState(snapshot=snapshot, recovered=False, backlog=[])
    backlog = events_between(run_id=run_id, after=since, upto=snapshot.seq)
    recovered = len(backlog) == snapshot.seq - since
    return ConnectState(snapshot=snapshot, recovered=recovered, backlog=backlog if recovered else [])


def user_for_token(*, key: str):
    """The active user a DRF token key belongs to, or None."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


class Revoked(NamedTuple):
    """Which of the credentials asked about no longer hold (``revoked_credentials``)."""

    token_keys: frozenset[str]
    user_ids: frozenset[int]
    session_keys: frozenset[str]


def revoked_credentials(
    *, token_keys: Collection[str], user_ids: Collection[int], session_keys: Collection[str]
) -> Revoked:
    """Which of these no longer hold: a token deleted (or its user inactive), a user deactivated
    or deleted, a session ended or expired.

    The process's access watch (realtime.delivery.access_watch) asks this once per period
    for all of its open sockets: one statement per kind asked about (per
    _IN_CHUNK of them), whatever the number of sockets.
    """
    from django.contrib.sessions.models import Session
    from rest_framework.authtoken.models import Token

    live_tokens = _present(Token.objects.filter(user__is_active=True), "key", token_keys)
    active_users = _present(get_user_model().objects.filter(is_active=True), "pk", user_ids)
    live_sessions = _present(
        Session.objects.filter(expire_date__gt=timezone.now()), "session_key", session_keys
    )
    return Revoked(
        token_keys=frozenset(token_keys) - live_tokens,
        user_ids=frozenset(user_ids) - active_users,
        session_keys=frozenset(session_keys) - live_sessions,
    )


def _present(queryset, field: str, values: Collection) -> set:
    """Those of ``values`` that ``queryset`` holds in ``field``: no statement for none."""
    values = list(values)
    found: set = set()
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        found.update(queryset.filter(**{f"{field}__in": chunk}).values_list(field, flat=True))
    return found


# Values per IN list: a statement's parameters are bounded (SQLite 32,766 by
# default; 65,535 in PostgreSQL's protocol, which server-side binding uses).
_IN_CHUNK = 10_000


def events_between(
    *, run_id: uuid.UUID, after: int, upto: int | None = None, limit: int | None = None
) -> list[RunEvent]:
    """The run's events with after < seq ≤ upto, in order."""
    events = RunEvent.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    events = events.order_by("seq")
    if limit is not None:
        events = events[:limit]
    return list(events)


# The poll query on PostgreSQL (parameters: run ids, their cursors). Also run
# under EXPLAIN ANALYZE by bench/explain_poll.py for docs/protocol.md.
# A plain join of the cursors with the log lets the planner hash the whole
# table (a seq scan, growing with the log); LATERAL makes it one index range
# scan on (run, seq) per watched run, whatever the table's size.
# Only the model's own table name and frames' constant time format are interpolated.
# The frame's ts is formatted by PostgreSQL (as frames.format_ts does): at
# thousands of rows, loading tz-aware datetimes and model instances cost several
# times the query itself (docs/benchmarks.md).
POLL_SQL = (
    "SELECT w.run_id, e.seq, e.type, e.payload,"  # noqa: S608
    f" to_char(e.ts AT TIME ZONE 'UTC', '{TS_FORMAT_POSTGRES}')"
    " FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS w(run_id, after, n)"
    " LEFT JOIN LATERAL ("
    f"  SELECT seq, type, payload, ts FROM {RunEvent._meta.db_table}"
    "   WHERE run_id = w.run_id AND seq > w.after ORDER BY seq"
    " ) e ON true"
    # A run without new events comes back as a row without seq when it no longer exists
    # (deleted): an idle tick is one round trip, not two. The LIMIT keeps the lookup a
    # lateral subquery, not a join PostgreSQL may plan as a scan of the whole runs table
    # (a NOT EXISTS was hashed so; without the LIMIT, few watched runs got a hash join):
    # one probe of the runs' primary key per run without new events, none for the others.
    f" LEFT JOIN LATERAL (SELECT 1 AS present FROM {Run._meta.db_table}"
    "   WHERE id = w.run_id AND e.seq IS NULL LIMIT 1"
    " ) r ON true"
    " WHERE e.seq IS NOT NULL OR r.present IS NULL"
    " ORDER BY w.n, e.seq"
)


def poll_params(cursors: dict[uuid.UUID, int]) -> list[str]:
    """POLL_SQL's parameters: the run ids and their cursors as array literals.

    Literals, because psycopg adapts a list of UUID objects one by one, at a cost
    per id that dominates a large tick (docs/benchmarks.md).
    """
    run_ids = "{" + ",".join(str(uuid.UUID(str(run_id))) for run_id in cursors) + "}"
    afters = "{" + ",".join(str(int(after)) for after in cursors.values()) + "}"
    return [run_ids, afters]


class PolledEvent(NamedTuple):
    """One logged event as the poller needs it (``ts`` already formatted for the frame)."""

    run_id: uuid.UUID
    seq: int
    type: str
    payload: Any
    ts: str


class Polled(NamedTuple):
    """What one poll found: the runs' new events, and which of the runs no longer exist."""

    events: list[PolledEvent]
    gone: set[uuid.UUID]


def events_after_cursors(*, cursors: dict[uuid.UUID, int]) -> Polled:
    """Every run's events above its cursor, each run's together in seq order, and the runs
    deleted meanwhile — one query for all runs.

    The process's poller calls this once per tick with, per watched run, the
    lowest seq its watchers have seen. On PostgreSQL the cursors travel as two
    arrays (one statement text whatever the count, so it plans once); each
    (run, seq > after) pair is an index range scan on the (run, seq) unique
    constraint, and only a run with nothing new is told deleted or not, by a
    probe of the runs' key (see POLL_SQL). Elsewhere (SQLite) the pairs are OR'ed conditions, and the quiet
    runs' lookup is a query of its own.
    """
    if not cursors:
        return Polled([], set())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(POLL_SQL, poll_params(cursors))
            rows = cursor.fetchall()
        events, gone = [], set()
        for run_id, seq, type, payload, ts in rows:
            if seq is None:
                gone.add(run_id)
            else:
                events.append(
                    PolledEvent(
                        run_id, seq, type, json.loads(payload) if isinstance(payload, str) else payload, ts
                    )
                )
        return Polled(events, gone)
    # SQLite caps expression depth (1000), so very many runs take a few queries.
    found: list[PolledEvent] = []
    pairs = list(cursors.items())
    for start in range(0, len(pairs), _OR_CHUNK):
        condition = Q()
        for run_id, after in pairs[start : start + _OR_CHUNK]:
            condition |= Q(run_id=run_id, seq__gt=after)
        found.extend(
            PolledEvent(e.run_id, e.seq, e.type, e.payload, format_ts(e.ts))
            for e in RunEvent.objects.filter(condition).order_by("run_id", "seq")
        )
    quiet = set(cursors) - {event.run_id for event in found}
    existing = set(Run.objects.filter(pk__in=quiet).values_list("pk", flat=True)) if quiet else set()
    return Polled(found, quiet - existing)


_OR_CHUNK = 200


def event_ids_older_than(*, cutoff: datetime, limit: int) -> list[int]:
    """Ids of at most ``limit`` events recorded before ``cutoff``, oldest first (retention)."""
    return list(RunEvent.objects.filter(ts__lt=cutoff).order_by("ts").values_list("pk", flat=True)[:limit])
