"""Reads of the event log and of consistent run snapshots."""

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q, prefetch_related_objects
from django.utils import timezone
from rest_framework import serializers

from realtime.frames import TS_FORMAT_POSTGRES, format_ts
from realtime.models import RunEvent
from runs.models import RUN_TERMINAL, Run, Step
from runs.selectors import may_see_run
from runs.serializers import RunSerializer


class Refused(Enum):
    """Why a watcher gets no snapshot (realtime.consumers.base maps each to its close code)."""

    UNAUTHENTICATED = "unauthenticated"
    MISSING = "missing"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Snapshot:
    seq: int
    run: dict
    terminal: bool


@dataclass(frozen=True)
class ConnectState:
    """What a new watcher is sent: the snapshot, and the events it missed."""

    snapshot: Snapshot
    recovered: bool
    backlog: list[RunEvent]


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
    hand-written statement (see ``watch_sql``); elsewhere the ORM.
    """
    if connection.vendor == "postgresql":
        snapshot = _snapshot_by_sql(run_id=run_id, user=user, token_key=token_key)
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


def credentials_still_valid(*, token_key: str | None, user_id: int | None, session_key: str | None) -> bool:
    """Whether a watcher's credentials still hold: its token exists (of an active user), or its
    user is active and its session still exists. Checked again while a socket is open."""
    from django.contrib.sessions.models import Session
    from rest_framework.authtoken.models import Token

    if token_key is not None:
        return Token.objects.filter(key=token_key, user__is_active=True).exists()
    if user_id is None or not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
        return False
    if session_key is None:
        return True
    return Session.objects.filter(session_key=session_key, expire_date__gt=timezone.now()).exists()


# --- The connect read on PostgreSQL ---------------------------------------------------
# Profiled (docs/benchmarks.md): with the ORM and DRF a connect cost ~8 ms of the
# database thread — 20 % of it compiling the token query, 45 % the run, its steps
# and the serializer — so 1,000 clients took 15 s to connect. One statement does
# it all; a single statement sees one snapshot, so the run, its steps and its seq
# agree (as REPEATABLE READ gave the ORM path). Step times travel as epoch
# microseconds (exact) and are formatted as DRF formats them; the result must
# equal RunSerializer's (tests/realtime/test_selectors.py checks it).


@functools.cache
def watch_sql() -> str:
    """The connect read: token → user, the run, its owner's name and its steps, one statement.

    Only model table and column names are interpolated; the token key and the
    run id are parameters.
    """
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    users, runs, steps, tokens = (m._meta.db_table for m in (User, Run, Step, Token))
    username = User._meta.get_field(User.USERNAME_FIELD).column
    us = "round(extract(epoch FROM s.{}) * 1000000)::bigint"  # epoch microseconds: exact
    step_rows = (
        "SELECT json_agg(json_build_array(s.index, s.tool, s.args, s.status, s.output, s.error, "  # noqa: S608
        f"{us.format('started_at')}, {us.format('finished_at')}) ORDER BY s.index)"
        f" FROM {steps} s WHERE s.run_id = r.id"
    )
    return (
        f"SELECT who.user_id, who.is_staff, r.id, r.owner_id, o.{username}, r.status, r.prompt,"  # noqa: S608
        f" r.plan, r.output, r.error, r.created_at, r.started_at, r.finished_at, r.seq, ({step_rows})"
        " FROM (VALUES (1)) AS one (x)"
        f" LEFT JOIN (SELECT t.user_id, u.is_staff FROM {tokens} t JOIN {users} u ON u.id = t.user_id"
        "   WHERE t.key = %s AND u.is_active) AS who ON true"
        f" LEFT JOIN {runs} r ON r.id = %s"
        f" LEFT JOIN {users} o ON o.id = r.owner_id"
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_datetime_field = serializers.DateTimeField()


@functools.cache
def _time_format() -> str | None:
    """DRF's DATETIME_FORMAT when it is a strftime format (this project's), else None."""
    from rest_framework.settings import api_settings

    fmt = api_settings.DATETIME_FORMAT
    return fmt if isinstance(fmt, str) and fmt.lower() != "iso-8601" else None


def _drf_time(value: datetime | int | None, tz) -> str | None:
    """A time as DRF's DateTimeField renders it; an int is epoch microseconds.

    DRF converts to the current time zone and applies DATETIME_FORMAT; doing
    the same directly costs a tenth of calling the field (a snapshot has two
    times per step).
    """
    if value is None:
        return None
    if isinstance(value, int):
        value = _EPOCH + timedelta(microseconds=value)
    fmt = _time_format()
    if fmt is None:
        return _datetime_field.to_representation(value)
    return value.astimezone(tz).strftime(fmt)


def _json(value: Any) -> Any:
    # Django loads jsonb as text (JSONField decodes it); json comes decoded.
    return json.loads(value) if isinstance(value, str) else value


def _snapshot_by_sql(*, run_id: uuid.UUID, user, token_key: str | None) -> Snapshot | Refused:
    with connection.cursor() as cursor:
        cursor.execute(watch_sql(), [token_key, run_id])
        row = cursor.fetchone()
    who_id, who_staff, found, owner_id, owner, status, prompt, plan, output, error = row[:10]
    created_at, started_at, finished_at, seq, steps = row[10:]
    # Whose access is checked: the token's user, the session's, or nobody's.
    if token_key is not None:
        if who_id is None:
            return Refused.UNAUTHENTICATED
        viewer = (who_id, who_staff)
    else:
        viewer = None if user is None else (user.pk, user.is_staff)
    if found is None:
        return Refused.MISSING
    if viewer is not None and not may_see_run(user_id=viewer[0], is_staff=viewer[1], owner_id=owner_id):
        return Refused.FORBIDDEN
    tz = timezone.get_current_timezone()
    run = {
        "id": str(found),
        "owner": owner,
        "status": status,
        "prompt": prompt,
        "plan": _json(plan),
        "output": _json(output),
        "error": error,
        "created_at": _drf_time(created_at, tz),
        "started_at": _drf_time(started_at, tz),
        "finished_at": _drf_time(finished_at, tz),
        "seq": seq,
        "steps": [
            {
                "index": index,
                "tool": tool,
                "args": args,
                "status": step_status,
                "output": step_output,
                "error": step_error,
                "started_at": _drf_time(step_started, tz),
                "finished_at": _drf_time(step_finished, tz),
            }
            for index, tool, args, step_status, step_output, step_error, step_started, step_finished in (
                _json(steps) or []
            )
        ],
        "ws_url": f"/ws/runs/{found}/",
    }
    return Snapshot(seq=seq, run=run, terminal=status in RUN_TERMINAL)


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
# table (a seq scan: 250 ms at 200k events); LATERAL makes it one index range
# scan on (run, seq) per watched run, whatever the table's size.
# Only the model's own table name and frames' constant time format are interpolated.
# The frame's ts is formatted by PostgreSQL (as frames.format_ts does): at
# thousands of rows, loading tz-aware datetimes and model instances cost 7x the
# query itself.
POLL_SQL = (
    "SELECT e.run_id, e.seq, e.type, e.payload,"  # noqa: S608
    f" to_char(e.ts AT TIME ZONE 'UTC', '{TS_FORMAT_POSTGRES}')"
    " FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS w(run_id, after, n)"
    " CROSS JOIN LATERAL ("
    f"  SELECT id, run_id, seq, type, payload, ts FROM {RunEvent._meta.db_table}"
    "   WHERE run_id = w.run_id AND seq > w.after ORDER BY seq"
    " ) e"
    " ORDER BY w.n, e.seq"
)


def poll_params(cursors: dict[uuid.UUID, int]) -> list[str]:
    """POLL_SQL's parameters: the run ids and their cursors as array literals.

    Literals, because psycopg adapting a list of UUID objects costs ~25 µs each.
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


def events_after_cursors(*, cursors: dict[uuid.UUID, int]) -> list[PolledEvent]:
    """Every run's events above its cursor, each run's together in seq order — one query for all runs.

    The process's poller calls this once per tick with, per watched run, the
    lowest seq its watchers have seen. On PostgreSQL the cursors travel as two
    arrays (one statement text whatever the count, so it plans once); each
    (run, seq > after) pair is an index range scan on the (run, seq) unique
    constraint (see POLL_SQL). Elsewhere (SQLite) the pairs are OR'ed conditions.
    """
    if not cursors:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(POLL_SQL, poll_params(cursors))
            rows = cursor.fetchall()
        return [
            PolledEvent(run_id, seq, type, json.loads(payload) if isinstance(payload, str) else payload, ts)
            for run_id, seq, type, payload, ts in rows
        ]
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
    return found


_OR_CHUNK = 200


def event_ids_older_than(*, cutoff: datetime, limit: int) -> list[int]:
    """Ids of at most ``limit`` events recorded before ``cutoff``, oldest first (retention)."""
    return list(RunEvent.objects.filter(ts__lt=cutoff).order_by("ts").values_list("pk", flat=True)[:limit])
