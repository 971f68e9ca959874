"""One ``Stream`` per connection: a socket's state, its named transitions, and the one place it ends.

Both endpoints (/ws/runs/<id>/: realtime.sockets.run, /ws/runs/:
realtime.runlist.user_stream) keep their connection's state here, in one
machine::

    connecting ──went_live──▶ live ◀──on_layer_up── polling
        │                      │  └──on_layer_down──▶  │
        │                      └──fell_behind──┐  ┌────┘fell_behind
        │                                      ▼  ▼
        │                                   resyncing ──resynced──▶ live | polling
        └──────────── close (from any state) ──────────▶ closed

- connecting: accepted; joining the layer and reading the snapshot. Nothing
  else is sent until ``connected``.
- live: following by push (the process's hub or the list's channel).
- polling: following from the log, by the process's poller: the policy says
  so (poll mode), or the layer failed this connection (push, hybrid).
- resyncing: the client fell more than REALTIME_MAX_CLIENT_BUFFER behind;
  what comes is dropped until it has drained, then a fresh ``connected``.
- closed: ``close`` has sent the close code, and the connection is gone from
  every registry of the process (realtime.delivery.front_door). Nothing more is sent.

How events reach it is a ``Policy`` (settings.REALTIME_MODE), not a class:
push joins the layer and fails over to polling; poll only polls; hybrid is
push with a slow poll as a safety net. Whether the layer is up for this
connection is kept apart from the state (``layer_down``), so a stream that
falls behind while polling comes back polling.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from django.conf import settings

from observability import record
from realtime.delivery import front_door


class State(enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    POLLING = "polling"
    RESYNCING = "resyncing"
    CLOSED = "closed"


FOLLOWING = (State.LIVE, State.POLLING)

# Every transition the machine makes: its name → (the states it leaves, the states it reaches).
TRANSITIONS: dict[str, tuple[frozenset[State], frozenset[State]]] = {
    "went_live": (frozenset({State.CONNECTING}), frozenset(FOLLOWING)),
    "on_layer_down": (frozenset({State.LIVE}), frozenset({State.POLLING})),
    "on_layer_up": (frozenset({State.POLLING}), frozenset({State.LIVE})),
    "fell_behind": (frozenset(FOLLOWING), frozenset({State.RESYNCING})),
    "resynced": (frozenset({State.RESYNCING}), frozenset(FOLLOWING)),
    "lost": (frozenset(State), frozenset({State.CLOSED})),
    "close": (frozenset(State), frozenset({State.CLOSED})),
}


@dataclass(frozen=True)
class Policy:
    """How events reach a stream: from the layer (``push``), and how often its log is read meanwhile."""

    mode: str
    push: bool
    live_poll_interval: float | None  # while the layer is up (hybrid's safety net); None: never

    @classmethod
    def of_mode(cls, mode: str) -> Policy:
        """The policy of settings.REALTIME_MODE (push, poll, hybrid) for a run's stream."""
        if mode == "poll":
            return cls(mode=mode, push=False, live_poll_interval=settings.REALTIME_POLL_INTERVAL)
        if mode == "hybrid":
            return cls(mode=mode, push=True, live_poll_interval=settings.REALTIME_FALLBACK_INTERVAL)
        return cls(mode=mode, push=True, live_poll_interval=None)

    def poll_interval(self, *, layer_down: bool) -> float | None:
        """How often the log is read for a following stream (None: it is not)."""
        return settings.REALTIME_POLL_INTERVAL if layer_down else self.live_poll_interval


class Stream:
    """One connection's state machine; ``socket`` is its transport (realtime.sockets.socket)."""

    def __init__(self, socket, *, policy: Policy) -> None:
        self.socket = socket
        self.policy = policy
        self.state = State.CONNECTING
        # The layer failed this connection (push policies): it polls until the layer is back.
        self.layer_down = False
        self._resume_to: State | None = None  # where a resync returns
        self.resync: asyncio.Task | None = None
        self.observed: record.Connection | None = None  # this socket in the logs and metrics
        self._released = False

    # --- Reading the state -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def following(self) -> bool:
        return self.state in FOLLOWING or self.state is State.RESYNCING

    @property
    def degraded(self) -> bool:
        """Served by the poller because the layer failed it (push and hybrid)."""
        return self.layer_down

    @property
    def mode(self) -> str:
        return self.policy.mode

    def fallback_interval(self) -> float | None:
        """How often the poller reads this stream while the layer is healthy (push: never)."""
        return self.policy.live_poll_interval

    # --- Transitions ---------------------------------------------------------------------

    def _move(self, transition: str, to: State) -> None:
        """The one assignment of ``state``: ``transition`` (a name of TRANSITIONS) to ``to``."""
        leaves, reaches = TRANSITIONS[transition]
        if self.state not in leaves or to not in reaches:
            raise RuntimeError(f"{transition}: a stream does not go from {self.state.value} to {to.value}")
        self.state = to

    def _following_state(self) -> State:
        return State.POLLING if (self.layer_down or not self.policy.push) else State.LIVE

    def went_live(self) -> None:
        """``connected`` is out: follow by push, or by the poller."""
        self._move("went_live", self._following_state())
        self._sync_poll()

    def on_layer_down(self, error: Exception | None = None) -> None:
        """The layer failed it (its join, the hub's receive, the probe): poll until the layer is back."""
        if self.closed:
            return
        if not self.layer_down:
            self.layer_down = True
            self._transport_changed()
        if self.state is State.LIVE:
            self._move("on_layer_down", State.POLLING)
        elif self.state is State.RESYNCING:
            self._resume_to = State.POLLING
        self._sync_poll()
        front_door.layer_suspected()

    async def on_layer_up(self) -> bool:
        """The probe found the layer back: rejoin, leave the poller, fill from the log. True when back."""
        if not await self.resubscribe():
            return False
        if self.closed:
            return True
        self.layer_down = False
        if self.state is State.POLLING and self.policy.push:
            self._move("on_layer_up", State.LIVE)
        elif self.state is State.RESYNCING:
            self._resume_to = self._following_state()
        self._sync_poll()
        self._transport_changed()
        await self.caught_up()
        return True

    def fell_behind(self) -> None:
        """The client left more than its buffer unread: drop what comes, resync once it has drained."""
        self._resume_to = self.state
        self._move("fell_behind", State.RESYNCING)
        self.resync = asyncio.create_task(self._resync_when_drained())

    def resynced(self) -> None:
        """A fresh ``connected`` is out: follow again as before."""
        self.resync = None
        to = self._resume_to if self._resume_to in FOLLOWING else self._following_state()
        self._resume_to = None
        self._move("resynced", to)

    def lost(self) -> None:
        """The client is gone (a send found its socket closed): nothing more is sent."""
        self._move("lost", State.CLOSED)

    async def close(self, code: int | None = None, *, error: str | None = None) -> None:
        """End the stream: ``error`` frame and close ``code`` (if any, once), then leave every registry.

        The one place a stream ends; it may run more than once (a refusal, then
        the socket's end), and must not raise.
        """
        if not self.closed:
            self._move("close", State.CLOSED)
            if self.resync is not None:
                self.resync.cancel()
            if code is not None:
                if error is not None:
                    await self.socket._error(str(code), error)
                await self.socket.close(code=code)
        elif self.resync is not None:
            self.resync.cancel()
        if not self._released:
            self._released = True
            await self.release()

    # --- What each endpoint says ---------------------------------------------------------

    async def resubscribe(self) -> bool:
        """Join (again) what this stream receives on the layer; False when the layer fails."""
        raise NotImplementedError

    async def caught_up(self) -> None:
        """After a return to push: what the log holds that the poller has not brought."""

    def _sync_poll(self) -> None:
        """Be polled at the interval this state needs (or not at all)."""
        raise NotImplementedError

    async def release(self) -> None:
        """Leave every registry of the process and the layer. Must not raise."""
        raise NotImplementedError

    async def _resync_when_drained(self) -> None:
        raise NotImplementedError

    def _transport_changed(self) -> None:
        """Say so in the logs and metrics (push ⇄ poll)."""
