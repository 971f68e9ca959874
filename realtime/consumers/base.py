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
import json
import logging
import uuid
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from observability import record
from realtime import daphne_tuning, db, frames, publisher, selectors
from realtime.snapshot import Refused

try:  # Daphne's WebSocket layer; absent under other ASGI servers and in unit tests' communicator
    from autobahn.exception import Disconnected as _SocketGone
except ImportError:  # pragma: no cover
    _SocketGone = ConnectionError

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
# Not 1009: autobahn (under Daphne) lets a server close only with 1000 or
# 3000-4999, and turned 1009 into an exception and a 1011 close.
CLOSE_TOO_BIG = 4009
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

# How often a client that fell behind is looked at until it has drained.
RESYNC_CHECK_SECONDS = 0.2

# Every refusal of a watcher: its close code and the error frame's message.
REFUSALS: dict[Refused, tuple[int, str]] = {
    Refused.UNAUTHENTICATED: (CLOSE_UNAUTHENTICATED, "not authenticated"),
    Refused.MISSING: (CLOSE_NOT_FOUND, "no such run"),
    Refused.FORBIDDEN: (CLOSE_FORBIDDEN, "not your run"),
}


class BaseRunConsumer(AsyncWebsocketConsumer):
    """Streams one run's events to one client; subclasses pick the transport."""

    mode = ""
    # Polling needs no channel layer (it must work with Redis down).
    uses_channel_layer = True

    async def __call__(self, scope, receive, send) -> None:
        """Channels' AsyncConsumer.__call__, without a channel of its own on the layer (pinned as dispatch).

        Upstream opens a layer channel per connection and waits on it and on the
        socket at once. Push connections here receive through the process's
        RunHub (realtime/hub.py), which calls ``deliver``; so the consumer only
        reads its socket, and a failing layer cannot kill the connection.
        """
        self.scope = scope
        self.base_send = send
        self.init_state()
        self.channel_name = None
        self.channel_layer = (
            publisher.consumer_layer(self.channel_layer_alias) if self.uses_channel_layer else None
        )
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Daphne cancels an application that outlives its socket: the
            # process's hub, poller and probe must not keep this watcher.
            # (unsubscribe is idempotent; after a normal disconnect it is a no-op.)
            self.finished = True
            for task in (self.access_checks, self.resync):
                if task is not None:
                    task.cancel()
            await self.unsubscribe()
            record.socket_closed(self.observed, None)  # no-op after disconnect(); else ended unclosed

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, without its close_old_connections() before every message.

        Upstream (Channels 4.2+) sends every message's handling through the
        process's one database thread first (``aclose_old_connections``), so in
        a connect storm every ``accept()`` queues behind the other connections'
        database work. Every read of these consumers goes through
        realtime.db.read, which replaces a dead connection itself. The copied
        upstream methods are pinned by tests/realtime/test_channels_pin.py.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def layer_failed(self, error: Exception) -> None:
        """The channel layer raised for this connection (push modes fail over)."""
        logger.debug("channel layer receive failed: %s", error)

    def init_state(self) -> None:
        """Set before any message is handled: the layer may fail before connect() runs."""
        self.run_id: uuid.UUID | None = None
        self.last_seq = 0
        self.finished = False
        self.access_checks: asyncio.Task | None = None
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
            self.run_id = uuid.UUID(self.scope["url_route"]["kwargs"]["run_id"])
        except ValueError:
            await self._refuse(CLOSE_BAD_REQUEST, "the run id is not a UUID")
            return
        try:
            since = self._since()
        except ValueError as error:
            await self._refuse(CLOSE_BAD_REQUEST, str(error))
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
        state = await db.read(
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
        self.access_checks = asyncio.create_task(
            self._check_access_periodically(user=user, token_key=token_key)
        )

    async def _check_access_periodically(self, *, user, token_key: str | None) -> None:
        """Close 4401 once the credentials the socket opened with are gone.

        Channels checks them only at the handshake; a token deleted, a user
        deactivated or a session ended meanwhile must not keep a socket that
        streams a long run's every event.
        """
        session = self.scope.get("session")
        checked = {
            "token_key": token_key,
            "user_id": None if token_key is not None else getattr(user, "pk", None),
            "session_key": None if token_key is not None else getattr(session, "session_key", None),
        }
        while not self.finished:
            await asyncio.sleep(settings.REALTIME_ACCESS_RECHECK_SECONDS)
            if self.finished:
                return
            try:
                valid = await db.read(selectors.credentials_still_valid, **checked)
            except Exception as error:  # noqa: BLE001 - the database is away: look again next time
                logger.warning("could not re-check a watcher's credentials: %s", error)
                continue
            if not valid:
                async with self.deliver_lock:
                    if not self.finished:
                        await self._refuse(CLOSE_UNAUTHENTICATED, "the credentials were revoked")
                return

    def _since(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("since")
        if not values:
            return None
        if not values[-1].isdigit():
            raise ValueError("since must be a non-negative whole number")
        return int(values[-1])

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
                missed = await db.read(
                    selectors.events_between, run_id=self.run_id, after=self.last_seq, upto=seq - 1
                )
                for event in missed:
                    await self._send_event(event.seq, frames.encode_event(event), final=False)
            await self._send_event(seq, text, final=final)

    def delivers_without_waiting(self, seq: int) -> bool:
        """Whether ``deliver(seq)`` sends at once: no delivery under way, no gap to fill first."""
        return not self.deliver_lock.locked() and seq <= self.last_seq + 1

    async def catch_up(self) -> None:
        """Deliver whatever the log holds above last_seq (after a transport change)."""
        if self.finished or self.run_id is None:
            return
        missed = await db.read(selectors.events_between, run_id=self.run_id, after=self.last_seq)
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

    def _client_behind(self) -> bool:
        unsent = daphne_tuning.unsent_bytes(self.base_send)
        return unsent is not None and unsent > settings.REALTIME_MAX_CLIENT_BUFFER

    async def _resync_when_drained(self) -> None:
        """Wait until the client has read most of what it was sent, then send it a fresh `connected`."""
        low_water = settings.REALTIME_MAX_CLIENT_BUFFER // 4
        while not self.finished:
            unsent = daphne_tuning.unsent_bytes(self.base_send)
            if unsent is None or unsent <= low_water:
                break
            await asyncio.sleep(RESYNC_CHECK_SECONDS)
        async with self.deliver_lock:
            if self.finished:
                return
            snapshot = await db.read(selectors.run_snapshot, run_id=self.run_id)
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

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        """Channels' send; a frame for a client that is already gone is dropped, not an error.

        A client may close (or lose) its connection while a frame is on its way
        to it — a pong for a ping it sent just before closing, an event — and
        Daphne then raises from the send: a traceback in the log for ordinary
        client behaviour. The disconnect that follows ends this consumer.
        """
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except _SocketGone:
            self.finished = True

    # --- Client frames -----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.finished:
            return  # closing (refused, too big, run finished): nothing more is answered
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.REALTIME_MAX_CLIENT_FRAME:
            await self._refuse(
                CLOSE_TOO_BIG, f"a client frame is at most {settings.REALTIME_MAX_CLIENT_FRAME} bytes"
            )
            return
        if text_data is None:
            await self._error("binary_not_supported", "send JSON text frames")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self._error("malformed", "the frame is not valid JSON")
            return
        except RecursionError:
            # json raises this, not a ValueError, for deeply nested arrays or objects.
            await self._error("malformed", "the frame's JSON is nested too deeply")
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            if not self._client_behind():  # a client that does not read gets no more pongs
                await self._send_frame("pong", {}, seq=self.last_seq)
        elif not isinstance(kind, str):
            await self._error("malformed", 'a client frame is a JSON object with a "type"')
        else:
            await self._error("unknown_type", f"unknown frame type {kind[:64]!r}; the client may send 'ping'")

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

    async def _refuse(self, close_code: int, message: str) -> None:
        """Say why in an error frame, then close with the protocol's code."""
        await self._error(str(close_code), message)
        self.finished = True
        await self.close(code=close_code)
