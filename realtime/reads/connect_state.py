"""What a watcher's connect read answers: the snapshot and the events it missed, or why not.

Shared by the reference read (realtime.reads.selectors) and its fast path
(realtime.reads.fast_snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from realtime.models import RunEvent


class Refused(Enum):
    """Why a watcher gets no snapshot (realtime.sockets.run maps each to its close code)."""

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
