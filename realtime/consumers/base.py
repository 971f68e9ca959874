"""The run protocol shared by every mode: validate, authorise, connect, relay.

``BaseRunConsumer`` serves /ws/runs/<run_id>/ (docs/protocol.md). A mode
subclass only says how events reach it (``subscribe`` before the snapshot,
``follow`` after ``connected``, ``unsubscribe`` on the way out); whatever the
transport, every event goes through ``deliver``, which sends each seq once and
in order and fills gaps from the log. Order on connect: subscribe, then read
the snapshot (seq N), then deliver only events above N — so an event committed
while the client connects is seen exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import parse_qs

from django.utils import timezone

from observability import record
from realtime.consumers.socket import ProtocolSocket
from realtime.protocol import frames
from realtime.protocol.close_codes import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
)
from realtime.protocol.params import ParamError, parse_run_id, parse_whole_number
from realtime.reads import selectors, threads
from realtime.reads.connect_state import Refused

logger = logging.getLogger(__name__)


# Every refusal of a watcher: its close code and the error frame's message.
REFUSALS: dict[Refused, tuple[int, str]] = {
    Refused.UNAUTHENTICATED: (CLOSE_UNAUTHENTICATED, "not authenticated"),
    Refused.MISSING: (CLOSE_NOT_FOUND, "no such run"),
    Refused.FORBIDDEN: (CLOSE_FORBIDDEN, "not your run"),
}


class BaseRunConsumer(ProtocolSocket):
    """Streams one run's events to one client; subclasses pick the transport."""

    mode = ""

    async def stop(self) -> None:
        """The process's hub, poller and probe must not keep this watcher (unsubscribe is idempotent)."""
        if self.resync is not None:
            self.resync.cancel()
        await self.unsubscribe()
        record.socket_closed(self.observed, None)  # no-op after disconnect(); else ended unclosed

    async def layer_failed(self, error: Exception) -> None:
        """The channel layer raised for this connection (push modes fail over)."""
        logger.debug("channel layer receive failed: %s", error)

    def init_state(self) -> None:
        """Set before any message is handled: the layer may fail before connect() runs."""
        self.run_id: uuid.UUID | None = None
        self.last_seq = 0
        self.finished = False
        # Set when the client fell more than REALTIME_MAX_CLIENT_BUFFER behind:
        # events are dropped until it drains, then a fresh `connected` resyncs it.
        self.resync: asyncio.Task | None = None
        # deliver() is entered from the consumer's own dispatch loop (push)
        # and from the process's poller (poll, hybrid, failover): one at a time.
        self.deliver_lock = asyncio.Lock()
        self.observed: record.Connection | None = None  # this socket in the logs and metrics

    async def connect(self) -> None:
        await self.accept()
        self.observed = record.socket_opened(
            mode=self.mode, run_id=self.scope["url_route"]["kwargs"].get("run_id")
        )
        try:
            self.run_id = parse_run_id(self.scope["url_route"]["kwargs"]["run_id"])
            since = self._since()
        except ParamError as error:
            await self._refuse(CLOSE_BAD_REQUEST, error.message)
            return
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")  # looked up with the snapshot, below
        if token_key is None and (user is None or not user.is_authenticated):
            await self._refuse(*REFUSALS[Refused.UNAUTHENTICATED])
            return
        # Deliveries wait until `connected` and the backlog are out: events reach a
        # push watcher from the process's hub (another task) as soon as it joins.
        async with self.deliver_lock:
            await self._subscribe_and_snapshot(user=user, token_key=token_key, since=since)

    async def _subscribe_and_snapshot(self, *, user, token_key: str | None, since: int | None) -> None:
        # Subscribe first, then read: an event committed meanwhile is both relayed
        # and (maybe) in the snapshot, and deliver() drops the copy by seq. The
        # token lookup and the access check ride on the snapshot's read (one trip to a
        # read thread); a refused watcher is closed before anything is relayed.
        await self.subscribe()
        state = await threads.read(
            selectors.connect_state, run_id=self.run_id, since=since, user=user, token_key=token_key
        )
        if isinstance(state, Refused):
            await self._refuse(*REFUSALS[state])
            return
        self.last_seq = state.snapshot.seq
        await self._send_frame(
            "connected",
            {"mode": self.mode, "recovered": state.recovered, "run": state.snapshot.run},
            seq=state.snapshot.seq,
        )
        for event in state.backlog:
            text = frames.encode_event(event)
            await self.send(text_data=text)
            record.frame_sent(self.observed, "replay", text)
        if state.snapshot.terminal:
            await self._finish()
            return
        await self.follow()
        self._watch_access(user=user, token_key=token_key)

    async def credentials_revoked(self) -> None:
        async with self.deliver_lock:  # not in the middle of a delivery
            await super().credentials_revoked()

    def _since(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("since")
        if not values:
            return None
        return parse_whole_number(values[-1], name="since")

    # --- Transport hooks (overridden by the modes) ---------------------------------

    async def subscribe(self) -> None:
        """Before the snapshot: start receiving events (push joins its group)."""

    async def follow(self) -> None:
        """After ``connected``: start any reading that needs last_seq (polling)."""

    async def unsubscribe(self) -> None:
        """Stop receiving events. Must not raise; called more than once."""

    async def disconnect(self, code: int) -> None:
        record.socket_closed(self.observed, code)
        self.finished = True
        await self.unsubscribe()

    # --- Delivery ----------------------------------------------------------------------

    async def deliver(self, seq: int, text: str, *, final: bool) -> None:
        """Send event ``seq`` once and in order, filling any gap from the log first."""
        async with self.deliver_lock:
            if self.finished or seq <= self.last_seq or self.resync is not None:
                return
            if seq > self.last_seq + 1:
                missed = await threads.read(
                    selectors.events_between, run_id=self.run_id, after=self.last_seq, upto=seq - 1
                )
                for event in missed:
                    await self._send_event(event.seq, frames.encode_event(event), final=False)
            await self._send_event(seq, text, final=final)

    async def run_deleted(self) -> None:
        """The run was deleted (the hub, the poller): a last `run_deleted` frame, then close 4404."""
        async with self.deliver_lock:
            if self.finished:
                return
            self.finished = True
            await self._send_frame(frames.RUN_DELETED, {}, seq=self.last_seq)
            await self.unsubscribe()
            await self.close(code=CLOSE_NOT_FOUND)

    def delivers_without_waiting(self, seq: int) -> bool:
        """Whether ``deliver(seq)`` sends at once: no delivery under way, no gap to fill first."""
        return not self.deliver_lock.locked() and seq <= self.last_seq + 1

    async def catch_up(self) -> None:
        """Deliver whatever the log holds above last_seq (after a transport change)."""
        if self.finished or self.run_id is None:
            return
        missed = await threads.read(selectors.events_between, run_id=self.run_id, after=self.last_seq)
        for event in missed:
            await self.deliver(
                event.seq,
                frames.encode_event(event),
                final=frames.is_final(event.type),
            )

    async def _send_event(self, seq: int, text: str, *, final: bool) -> None:
        if seq <= self.last_seq or self.finished or self.resync is not None:
            return
        if self._client_behind():
            # Its unread frames already fill the bound: drop this one and what
            # follows, and resync it with a fresh snapshot once it has drained.
            self.resync = asyncio.create_task(self._resync_when_drained())
            record.slow_client_resync(self.observed, run_id=self.run_id)
            return
        await self.send(text_data=text)
        record.frame_sent(self.observed, "live", text)
        self.last_seq = seq
        if final:
            await self._finish()

    async def _resync_when_drained(self) -> None:
        """Wait until the client has read most of what it was sent, then send it a fresh `connected`."""
        await self._wait_until_drained()
        async with self.deliver_lock:
            if self.finished:
                return
            snapshot = await threads.read(selectors.run_snapshot, run_id=self.run_id)
            self.resync = None
            if isinstance(snapshot, Refused):  # the run was deleted meanwhile
                await self._refuse(*REFUSALS[snapshot])
                return
            self.last_seq = snapshot.seq
            await self._send_frame(
                "connected",
                {"mode": self.mode, "recovered": False, "resync": True, "run": snapshot.run},
                seq=snapshot.seq,
            )
            if snapshot.terminal:
                await self._finish()

    async def _finish(self) -> None:
        self.finished = True
        await self.unsubscribe()
        await self.close(code=CLOSE_NORMAL)

    # --- Helpers ------------------------------------------------------------------------

    async def _send_frame(self, type: str, payload: dict, *, seq: int) -> None:
        frame = frames.build_frame(
            type=type, run_id=self.run_id or "", seq=seq, ts=timezone.now(), payload=payload
        )
        text = frames.encode_frame(frame)
        await self.send(text_data=text)
        record.frame_sent(self.observed, "control", text)

    async def _error(self, code: str, message: str) -> None:
        await self._send_frame("error", {"code": code, "message": message}, seq=self.last_seq)

    async def _pong(self) -> None:
        await self._send_frame("pong", {}, seq=self.last_seq)
