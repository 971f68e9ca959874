"""The fast path of the connect read, on PostgreSQL: token, access check, run and steps in one statement.

The reference is the ORM path, ``realtime.reads.selectors.run_snapshot`` with
``user_for_token`` and RunSerializer: what SQLite uses, and what this must
equal in every state a run can be in (tests/realtime/reads/test_selectors.py compares
them). The ORM path costs several queries, their compilation and the
serializer per connect, all on the process's read threads, which a connect
storm queues on (docs/benchmarks.md has the profile); one statement does it
all. A single statement sees one snapshot, so the run, its steps and its seq
agree, as REPEATABLE READ gives the ORM path. Step times travel as epoch
microseconds (exact) and are formatted as DRF formats them.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from realtime.reads.connect_state import Refused, Snapshot
from runs.models import RUN_TERMINAL, Run, Step
from runs.selectors import may_see_run


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
        f"{us.format('started_at')}, {us.format('finished_at')}, s.attempts, s.worker) ORDER BY s.index)"
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


def fast_snapshot(*, run_id: uuid.UUID, user, token_key: str | None) -> Snapshot | Refused:
    """What ``selectors.run_snapshot`` (with ``user_for_token``) answers, in one statement."""
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
                "attempts": attempts,
                "worker": step_worker,
            }
            for (
                index,
                tool,
                args,
                step_status,
                step_output,
                step_error,
                step_started,
                step_finished,
                attempts,
                step_worker,
            ) in _json(steps) or []
        ],
        "ws_url": f"/ws/runs/{found}/",
    }
    return Snapshot(seq=seq, run=run, terminal=status in RUN_TERMINAL)
