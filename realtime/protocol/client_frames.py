"""What the server makes of a client's frame: one judgement for every WebSocket endpoint.

A client may send ``{"type": "ping"}``; everything else is answered with an
``error`` frame or, past the protocol's limits, a close (docs/protocol.md,
"Frames (client → server)"). ``ClientFrameGate`` is one connection's judge: it
also holds that connection's frame budget, a token bucket, so one client's
flood of frames cannot take the process's time from every other client. This
module only decides; the consumer sends what it decided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from realtime.protocol.close_codes import CLOSE_RATE_LIMITED, CLOSE_TOO_BIG


@dataclass(frozen=True)
class Pong:
    """Answer with a ``pong``."""


@dataclass(frozen=True)
class Ignore:
    """Send nothing: a frame over the budget whose window already had its ``rate_limited`` error."""


@dataclass(frozen=True)
class Error:
    """Answer with an ``error`` frame; the socket stays open."""

    code: str
    message: str


@dataclass(frozen=True)
class Close:
    """Send an ``error`` frame whose code is ``close_code``, then close with it."""

    close_code: int
    message: str


Verdict = Pong | Ignore | Error | Close

# How long one "window" of rate limiting lasts: at most one `rate_limited` error per window.
RATE_LIMIT_WINDOW_SECONDS = 1.0


class ClientFrameGate:
    """One connection's client frames: their budget, then their content.

    The budget is a token bucket of ``burst`` frames refilled at
    ``per_second``; a frame past it is dropped unread (at most one
    ``rate_limited`` error per window tells the client). Dropped frames add to
    an abuse score that drains at ``per_second``: a client that keeps sending
    faster than twice its budget passes ``close_after`` and is closed with
    CLOSE_RATE_LIMITED, so the rest of its flood is not even parsed.
    """

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        close_after: int,
        max_frame: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.close_after = close_after
        self.max_frame = max_frame
        self.clock = clock
        self.tokens = float(burst)
        self.abuse = 0.0
        self.updated = clock()
        self.warned_at: float | None = None

    @classmethod
    def from_settings(cls) -> ClientFrameGate:
        from django.conf import settings

        return cls(
            per_second=settings.REALTIME_CLIENT_FRAMES_PER_SECOND,
            burst=settings.REALTIME_CLIENT_FRAMES_BURST,
            close_after=settings.REALTIME_CLIENT_FRAMES_CLOSE_AFTER,
            max_frame=settings.REALTIME_MAX_CLIENT_FRAME,
        )

    def judge(self, text_data: str | None, bytes_data: bytes | None) -> Verdict:
        over_budget = self._over_budget()
        if over_budget is not None:
            return over_budget
        return self._content(text_data, bytes_data)

    def judge_control_frame(self) -> Verdict:
        """An RFC 6455 ping or pong (opcode 0x9 / 0xA): the same budget as a data frame; Pong if within it.

        autobahn answers a control ping itself, below the application: counted
        nowhere, an unread flood of them piled their pongs up in the process.
        """
        return self._over_budget() or Pong()

    def seconds_until_next_frame(self) -> float:
        """How long until the budget has a frame again (0 when it has one now)."""
        return max(0.0, (1.0 - self.tokens) / self.per_second)

    def _over_budget(self) -> Verdict | None:
        now = self.clock()
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.per_second)
        self.abuse = max(0.0, self.abuse - elapsed * self.per_second)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        self.abuse += 1.0
        if self.abuse > self.close_after:
            return Close(CLOSE_RATE_LIMITED, f"more than {self.per_second:g} frames a second, sustained")
        if self.warned_at is not None and now - self.warned_at < RATE_LIMIT_WINDOW_SECONDS:
            return Ignore()
        self.warned_at = now
        return Error(
            "rate_limited",
            f"at most {self.per_second:g} frames a second (bursts of {self.burst}); "
            "frames over it are dropped",
        )

    def _content(self, text_data: str | None, bytes_data: bytes | None) -> Verdict:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > self.max_frame:
            return Close(CLOSE_TOO_BIG, f"a client frame is at most {self.max_frame} bytes")
        if text_data is None:
            return Error("binary_not_supported", "send JSON text frames")
        try:
            frame = json.loads(text_data)
        except ValueError:
            return Error("malformed", "the frame is not valid JSON")
        except RecursionError:
            # json raises this, not a ValueError, for deeply nested arrays or objects.
            return Error("malformed", "the frame's JSON is nested too deeply")
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            return Pong()
        if not isinstance(kind, str):
            return Error("malformed", 'a client frame is a JSON object with a "type"')
        return Error("unknown_type", f"unknown frame type {kind[:64]!r}; the client may send 'ping'")
