"""/ws/runs/<run_id>/: one run's events to one client (docs/protocol.md), whatever the mode.

``RunConsumer`` is the socket (validate, authorise, answer client frames);
its ``RunStream`` is the connection's state (realtime.sockets.stream):
how events reach it is its policy (push, poll, hybrid: settings.REALTIME_MODE),
and whatever brings an event — the hub, the poller, a catch-up — it goes
through ``on_event``, which sends each seq once and in order and fills gaps
from the log. Order on connect: subscribe, then read the snapshot (seq N),
then deliver only events above N — so an event committed while the client
connects is seen exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import parse_qs

from django.conf import settings
from django.utils import timezone

from observability import record
from realtime.delivery import front_door
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
from realtime.sockets.socket import ProtocolSocket
from realtime.sockets.stream import Policy, State, Stream

logger = logging.getLogger(__name__)


# Every refusal of a watcher: its close code and the error frame's message.
REFUSALS: dict[Refused, tuple[int, str]] = {
    Refused.UNAUTHENTICATED: (CLOSE_UNAUTHENTICATED, "not authenticated"),
    Refused.MISSING: (CLOSE_NOT_FOUND, "no such run"),
    Refused.FORBIDDEN: (CLOSE_FORBIDDEN, "not your run"),
}


class RunStream(Stream):
    """One run's stream to one client: its seq, its subscription, its deliveries."""

    def __init__(self, socket: RunConsumer, *, policy: Policy) -> None:
        super().__init__(socket, policy=policy)
        self.run_id: uuid.UUID | None = None
        self.last_seq = 0
        self.subscribed = False  # a member of the run's group on the layer, through the hub
        self.joined_once = False
        # on_event() is entered from the hub's task and from the poller's: one at a time.
        self.deliver_lock = asyncio.Lock()

    @property
    def layer(self):
        return self.socket.channel_layer

    # --- Connecting ----------------------------------------------------------------------

    async def open(self, *, user, token_key: str | None, since: int | None) -> None:
        """Subscribe, read the snapshot, send ``connected`` and the backlog, then follow.

        Deliveries wait until ``connected`` and the backlog are out: events
        reach a push stream from the process's hub (another task) as soon as it joins.
        """
        async with self.deliver_lock:
            # Subscribe first, then read: an event committed meanwhile is both relayed
            # and (maybe) in the snapshot, and on_event() drops the copy by seq. The
            # token lookup and the access check ride on the snapshot's read (one trip to a
            # read thread); a refused watcher is closed before anything is relayed.
            if self.policy.push:
                front_door.watch_layer(self, self.layer)
                if not await self.resubscribe():
                    self.on_layer_down()
            state = await threads.read(
                selectors.connect_state, run_id=self.run_id, since=since, user=user, token_key=token_key
            )
            if isinstance(state, Refused):
                await self.refuse(state)
                return
            self.last_seq = state.snapshot.seq
            await self.send_frame(
                "connected",
                {"mode": self.mode, "recovered": state.recovered, "run": state.snapshot.run},
                seq=state.snapshot.seq,
            )
            for event in state.backlog:
                text = frames.encode_event(event)
                await self.socket.send(text_data=text)
                record.frame_sent(self.observed, "replay", text)
            if state.snapshot.terminal:
                await self.close(CLOSE_NORMAL)
                return
            if self.closed:  # the client left meanwhile
                return
            self.went_live()
            front_door.watch_access(
                self, user=user, token_key=token_key, session=self.socket.scope.get("session")
            )

    # --- The layer (this stream, and the process's layer probe) -----------------------------

    async def resubscribe(self) -> bool:
        """Join (again) the run's group; False when the layer fails.

        After the first join, a join re-adds the membership on the layer: the
        failover probe calls this when Redis is back (a restarted Redis forgot
        it) and to refresh the core layer's expiring memberships.
        """
        try:
            await front_door.join(self, frames.group_name(self.run_id), self.layer, refresh=self.joined_once)
        except Exception as error:  # noqa: BLE001 - any layer failure means "fail over"
            # Debug: the layer probe reports an outage once for every watcher.
            logger.debug("joining the group of run %s failed: %s", self.run_id, error)
            self.subscribed = False
            return False
        self.subscribed = self.joined_once = True
        if self._released:  # the client left while we were joining
            await self._leave_group()
        return True

    def layer_names(self) -> tuple[list[str], str | None]:
        """The run's group, received on the process's channel (realtime.delivery.hub)."""
        return [frames.group_name(self.run_id)], front_door.hub_channel(self.layer)

    async def caught_up(self) -> None:
        """Deliver whatever the log holds above last_seq (after a transport change)."""
        if self.closed or self.run_id is None:
            return
        missed = await threads.read(selectors.events_between, run_id=self.run_id, after=self.last_seq)
        for event in missed:
            await self.on_event(event.seq, frames.encode_event(event), final=frames.is_final(event.type))

    def _sync_poll(self) -> None:
        if self.following and not self.closed:
            front_door.poll(self, self.policy.poll_interval(layer_down=self.layer_down))

    def _transport_changed(self) -> None:
        record.transport_changed(self.observed, run_id=self.run_id, degraded=self.layer_down)

    # --- Events (the hub, the poller) --------------------------------------------------------

    def delivers_without_waiting(self, seq: int) -> bool:
        """Whether ``on_event(seq)`` sends at once: no delivery under way, no gap to fill first."""
        return not self.deliver_lock.locked() and seq <= self.last_seq + 1

    async def on_event(self, seq: int, text: str, *, final: bool) -> None:
        """Send event ``seq`` once and in order, filling any gap from the log first."""
        async with self.deliver_lock:
            if self.state not in (State.LIVE, State.POLLING) or seq <= self.last_seq:
                return
            if seq > self.last_seq + 1:
                missed = await threads.read(
                    selectors.events_between, run_id=self.run_id, after=self.last_seq, upto=seq - 1
                )
                for event in missed:
                    await self._send_event(event.seq, frames.encode_event(event), final=False)
            await self._send_event(seq, text, final=final)

    async def on_deleted(self) -> None:
        """The run was deleted (the hub, the poller): a last `run_deleted` frame, then close 4404."""
        async with self.deliver_lock:
            if self.closed:
                return
            await self.send_frame(frames.RUN_DELETED, {}, seq=self.last_seq)
            await self.close(CLOSE_NOT_FOUND)

    async def on_revoked(self) -> None:
        """The access watch found the credentials this socket opened with gone: close 4401."""
        async with self.deliver_lock:  # not in the middle of a delivery
            if not self.closed:
                await self.close(CLOSE_UNAUTHENTICATED, error="the credentials were revoked")

    async def _send_event(self, seq: int, text: str, *, final: bool) -> None:
        if seq <= self.last_seq or self.state not in (State.LIVE, State.POLLING):
            return
        if self.socket.client_behind():
            # Its unread frames already fill the bound: drop this one and what
            # follows, and resync it with a fresh snapshot once it has drained.
            self.fell_behind()
            record.slow_client_resync(self.observed, run_id=self.run_id)
            return
        await self.socket.send(text_data=text)
        record.frame_sent(self.observed, "live", text)
        self.last_seq = seq
        if final:
            await self.close(CLOSE_NORMAL)

    async def _resync_when_drained(self) -> None:
        """Wait until the client has read most of what it was sent, then send it a fresh `connected`."""
        await self.socket.wait_until_drained()
        async with self.deliver_lock:
            if self.closed:
                return
            snapshot = await threads.read(selectors.run_snapshot, run_id=self.run_id)
            if isinstance(snapshot, Refused):  # the run was deleted meanwhile
                self.resync = None
                await self.refuse(snapshot)
                return
            self.resynced()
            self.last_seq = snapshot.seq
            await self.send_frame(
                "connected",
                {"mode": self.mode, "recovered": False, "resync": True, "run": snapshot.run},
                seq=snapshot.seq,
            )
            if snapshot.terminal:
                await self.close(CLOSE_NORMAL)

    # --- Ending --------------------------------------------------------------------------

    async def refuse(self, why: Refused) -> None:
        """Close with the refusal's code, its reason in an ``error`` frame first."""
        code, message = REFUSALS[why]
        await self.close(code, error=message)

    async def release(self) -> None:
        """Out of the process's probe, poller, access watch and hub (each idempotent)."""
        front_door.forget(self)
        await self._leave_group()

    async def _leave_group(self) -> None:
        if self.subscribed:
            self.subscribed = False
            await front_door.leave(self, frames.group_name(self.run_id), self.layer)

    # --- Frames ----------------------------------------------------------------------------

    async def send_frame(self, type: str, payload: dict, *, seq: int) -> None:
        frame = frames.build_frame(
            type=type, run_id=self.run_id or "", seq=seq, ts=timezone.now(), payload=payload
        )
        text = frames.encode_frame(frame)
        await self.socket.send(text_data=text)
        record.frame_sent(self.observed, "control", text)


class RunConsumer(ProtocolSocket):
    """The socket of /ws/runs/<run_id>/; its state is its ``RunStream``."""

    stream: RunStream

    def init_state(self) -> None:
        """Set before any message is handled: the layer may fail before connect() runs."""
        self.stream = RunStream(self, policy=Policy.of_mode(settings.REALTIME_MODE))
        # Polling needs no channel layer (it must work with Redis down).
        self.uses_channel_layer = self.stream.policy.push

    async def connect(self) -> None:
        await self.accept()
        stream = self.stream
        stream.observed = record.socket_opened(
            mode=stream.mode, run_id=self.scope["url_route"]["kwargs"].get("run_id")
        )
        try:
            stream.run_id = parse_run_id(self.scope["url_route"]["kwargs"]["run_id"])
            since = self._since()
        except ParamError as error:
            await self._refuse(CLOSE_BAD_REQUEST, error.message)
            return
        user = self.scope.get("user")
        token_key = self.scope.get("auth_token")  # looked up with the snapshot
        if token_key is None and (user is None or not user.is_authenticated):
            await self._refuse(*REFUSALS[Refused.UNAUTHENTICATED])
            return
        await stream.open(user=user, token_key=token_key, since=since)

    def _since(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("since")
        if not values:
            return None
        return parse_whole_number(values[-1], name="since")

    async def disconnect(self, code: int) -> None:
        record.socket_closed(self.stream.observed, code)
        await self.stream.close()

    async def stop(self) -> None:
        """The process's hub, poller and probe must not keep this stream."""
        await self.stream.close()
        record.socket_closed(self.stream.observed, None)  # no-op after disconnect(); else ended unclosed

    async def _error(self, code: str, message: str) -> None:
        await self.stream.send_frame("error", {"code": code, "message": message}, seq=self.stream.last_seq)

    async def _pong(self) -> None:
        await self.stream.send_frame("pong", {}, seq=self.stream.last_seq)
