"""The protocol's frame format: event types, group names, timestamps, building and encoding frames.

Everything that decides what a client receives byte for byte lives here, so
the log's writer, the publisher, the poller, the HTTP log and the consumers
all produce the same frames. This module imports no model and reads no
setting (quikday.settings writes ``TS_FORMAT`` as DRF's DATETIME_FORMAT; a test holds them equal).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

RUN_STATUS = "run_status"
RUN_COMPLETED = "run_completed"
STEP_STARTED = "step_started"
STEP_SUCCEEDED = "step_succeeded"
STEP_FAILED = "step_failed"
STEP_SKIPPED = "step_skipped"
# A running step whose executor was lost is executed again by the one taking the
# run over: its status stays running, its started_at and attempts change.
STEP_RETRIED = "step_retried"
EVENT_TYPES = (
    RUN_STATUS,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_RETRIED,
    RUN_COMPLETED,
)

# Not an event of the log (the run's log goes with it): the last frame a run's
# watcher gets when the run is deleted, before the close 4404 (docs/protocol.md).
RUN_DELETED = "run_deleted"

# Every timestamp of the protocol and the API: UTC with microseconds, always
# (2026-11-27T16:07:59.000123Z). DRF's DATETIME_FORMAT is this, and the poll
# query formats in PostgreSQL with ``TS_FORMAT_POSTGRES``, derived from it.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_STRFTIME_TO_POSTGRES = {
    "%Y": "YYYY",
    "%m": "MM",
    "%d": "DD",
    "%H": "HH24",
    "%M": "MI",
    "%S": "SS",
    "%f": "US",
}


def _postgres_format(strftime_format: str) -> str:
    """The to_char() pattern of a strftime format (letters outside directives quoted)."""
    parts, i = [], 0
    while i < len(strftime_format):
        if strftime_format[i] == "%":
            parts.append(_STRFTIME_TO_POSTGRES[strftime_format[i : i + 2]])
            i += 2
        else:
            char = strftime_format[i]
            parts.append(f'"{char}"' if char.isalpha() else char)
            i += 1
    return "".join(parts)


TS_FORMAT_POSTGRES = _postgres_format(TS_FORMAT)


class LoggedEvent(Protocol):
    """What a frame is built from: a RunEvent row, or the poller's row (its ts already text)."""

    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def ts(self) -> datetime | str: ...


def group_name(run_id: uuid.UUID | str) -> str:
    """The channel-layer group of one run's watchers."""
    return f"run.{uuid.UUID(str(run_id)).hex}"


# The user-level stream (/ws/runs/): a run's summary, to its owner's and staff's list groups.
RUN_SUMMARY = "run_summary"
STAFF_GROUP = "runs.staff"


def user_group_name(user_id: int) -> str:
    """The channel-layer group of one user's run-list streams."""
    return f"runs.user.{int(user_id)}"


def format_ts(moment: datetime) -> str:
    """``moment`` in TS_FORMAT (converted to UTC)."""
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def build_frame(*, type: str, run_id: uuid.UUID | str, seq: int, ts: datetime | str, payload: Any) -> dict:
    """A server frame. ``ts`` is a datetime, or a time already in TS_FORMAT (the poll query's)."""
    text_ts = ts if isinstance(ts, str) else format_ts(ts)
    return {"type": type, "run_id": str(run_id), "seq": seq, "ts": text_ts, "payload": payload}


def encode_frame(frame: dict) -> str:
    return json.dumps(frame, cls=DjangoJSONEncoder, separators=(",", ":"))


def summary_frame_text(summary: dict) -> str:
    """A run summary's ``run_summary`` frame, encoded (the publisher's and the list poller's)."""
    frame = build_frame(
        type=RUN_SUMMARY,
        run_id=summary["id"],
        seq=summary["seq"],
        ts=timezone.now(),
        payload={"run": summary},
    )
    return encode_frame(frame)


def encode_payload(payload: Any) -> str:
    """An event's payload as JSON text: what the log stores, and what the frame carries."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


def frame_text(*, type: str, run_id: uuid.UUID | str, seq: int, ts: datetime, payload_text: str) -> str:
    """``encode_frame(build_frame(...))`` byte for byte, around a payload already encoded.

    The log's writer encodes each payload once (``encode_payload``) and stores
    it; the frame it publishes is spliced around those bytes rather than
    encoded again. Keys in build_frame's order, separators as encode_frame's.
    """
    kind, run = json.dumps(type), json.dumps(str(run_id))
    return (
        f'{{"type":{kind},"run_id":{run},"seq":{int(seq)},"ts":"{format_ts(ts)}","payload":{payload_text}}}'
    )


def event_frame(event: LoggedEvent) -> dict:
    """The frame of one logged event."""
    return build_frame(
        type=event.type, run_id=event.run_id, seq=event.seq, ts=event.ts, payload=event.payload
    )


def encode_event(event: LoggedEvent) -> str:
    """The frame of one logged event, as sent on the socket."""
    return encode_frame(event_frame(event))


def is_final(event_type: str) -> bool:
    """Whether an event of this type ends its run's stream."""
    return event_type == RUN_COMPLETED
