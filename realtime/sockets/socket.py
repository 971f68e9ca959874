"""What every WebSocket endpoint does the same way: client frames, sending to a client that may be gone.

``ProtocolSocket`` is the transport of /ws/runs/<id>/ (run.RunConsumer) and
/ws/runs/ (user_stream.RunListConsumer). Each says how it writes its own
``pong`` and ``error`` (their frames differ in ``run_id`` and ``seq``); what a
client frame means, its size limit and its rate limit are judged once, by
realtime.protocol.client_frames. The connection's state is its ``stream``
(realtime.sockets.stream): a refusal, a lost client and the socket's end all
go through it.
"""

from __future__ import annotations

import asyncio

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime.events import publisher
from realtime.protocol.client_frames import ClientFrameGate, Close, Error, Ignore, Pong
from realtime.protocol.close_codes import CLOSE_RATE_LIMITED
from server import daphne_tuning

try:  # Daphne's WebSocket layer; absent under other ASGI servers and in unit tests' communicator
    from autobahn.exception import Disconnected as _SocketGone
except ImportError:  # pragma: no cover
    _SocketGone = ConnectionError

# How often a client that fell behind is looked at until it has drained.
RESYNC_CHECK_SECONDS = 0.2


class ProtocolSocket(AsyncWebsocketConsumer):
    """A socket of the protocol: answers client frames, refuses with an error frame and a close code."""

    stream = None  # the connection's state (realtime.sockets.stream), made by init_state
    frame_gate: ClientFrameGate | None = None
    reading_held_until = 0.0  # the event loop's time until which the client's socket is not read
    # A client closed for flooding has this long to read its close frame before
    # its connection is dropped (its socket is not read meanwhile).
    ABUSE_CLOSE_GRACE_SECONDS = 2.0
    # Polling needs no channel layer (it must work with Redis down).
    uses_channel_layer = True

    async def __call__(self, scope, receive, send) -> None:
        """Channels' AsyncConsumer.__call__, without a channel of its own on the layer (pinned as dispatch).

        Upstream opens a layer channel per connection before anything else
        (with the pub/sub layer, a SUBSCRIBE: the handshake failed while Redis
        was down) and waits on it and on the socket at once. Here the consumer
        only reads its socket; a run's watchers receive through the process's
        RunHub (realtime/delivery/hub.py), the list stream through a channel it opens
        when the layer lets it. A failing layer cannot kill the connection.
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
            # Daphne cancels an application that outlives its socket: nothing of
            # the process (hub, poller, probe, access watch, tasks) may keep this connection.
            await self.stop()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, without its close_old_connections() before every message.

        Upstream (Channels 4.2+) sends every message's handling through the
        process's one database thread first (``aclose_old_connections``), so in
        a connect storm every ``accept()`` queues behind the other connections'
        database work. Every read of these consumers goes through
        realtime.reads.threads.read, which replaces a dead connection itself. The upstream
        methods copied here are registered in server.upstream ("channels-consumer-loop"):
        their source as read is pinned there.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    @property
    def finished(self) -> bool:
        """Closing or closed: nothing more is sent or answered."""
        return self.stream is not None and self.stream.closed

    def init_state(self) -> None:
        """Set before any message is handled: the connection's ``stream``."""

    async def stop(self) -> None:
        """The connection is over: its stream ends (the one place that releases). Must not raise."""

    async def websocket_connect(self, message: dict) -> None:
        daphne_tuning.read_in_small_chunks(self.base_send)
        daphne_tuning.judge_control_frames(self.base_send)
        await super().websocket_connect(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.finished:
            return  # closing (refused, too big, run finished): nothing more is answered
        await self._act_on(self._frame_gate().judge(text_data, bytes_data), self._pong)

    async def realtime_control_frame(self, message: dict) -> None:
        """A client's RFC 6455 ping or pong, handed over by Daphne (daphne_tuning.judge_control_frames)."""
        if self.finished:
            return

        async def pong() -> None:
            if message["opcode"] == daphne_tuning.PING:
                daphne_tuning.send_control_pong(self.base_send, message["payload"])

        await self._act_on(self._frame_gate().judge_control_frame(), pong)

    def _frame_gate(self) -> ClientFrameGate:
        if self.frame_gate is None:
            self.frame_gate = ClientFrameGate.from_settings()
        return self.frame_gate

    async def _act_on(self, verdict, pong) -> None:
        """Do what the frame gate decided of a client frame; ``pong`` answers a ping within the budget."""
        if isinstance(verdict, Ignore) or (isinstance(verdict, Error) and verdict.code == "rate_limited"):
            # Over its budget: leave the rest in the client's socket until the budget has room.
            self._hold_reading(self.frame_gate.seconds_until_next_frame())
        if isinstance(verdict, Pong):
            if not self.client_behind():  # a client that does not read gets no more pongs
                await pong()
        elif isinstance(verdict, Error):
            await self._error(verdict.code, verdict.message)
        elif isinstance(verdict, Close):
            await self._refuse(verdict.close_code, verdict.message)
            if verdict.close_code == CLOSE_RATE_LIMITED:
                self._hold_reading(self.ABUSE_CLOSE_GRACE_SECONDS, then_drop=True)

    def _hold_reading(self, seconds: float, *, then_drop: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if now < self.reading_held_until and not then_drop:
            return  # already held; the resume is scheduled
        self.reading_held_until = now + seconds
        daphne_tuning.hold_reading(self.base_send, seconds=seconds, then_drop=then_drop)

    async def wait_until_drained(self) -> None:
        """Return once the client has read all but a quarter of REALTIME_MAX_CLIENT_BUFFER (or is gone)."""
        low_water = settings.REALTIME_MAX_CLIENT_BUFFER // 4
        while not self.finished:
            unsent = daphne_tuning.unsent_bytes(self.base_send)
            if unsent is None or unsent <= low_water:
                return
            await asyncio.sleep(RESYNC_CHECK_SECONDS)

    def client_behind(self) -> bool:
        """Whether the client has left more than REALTIME_MAX_CLIENT_BUFFER bytes unread (Daphne only)."""
        unsent = daphne_tuning.unsent_bytes(self.base_send)
        return unsent is not None and unsent > settings.REALTIME_MAX_CLIENT_BUFFER

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
            if self.stream is not None:
                self.stream.lost()

    async def _refuse(self, close_code: int, message: str) -> None:
        """Say why in an error frame, then close with the protocol's code (the stream ends)."""
        await self.stream.close(close_code, error=message)

    async def _pong(self) -> None:
        raise NotImplementedError

    async def _error(self, code: str, message: str) -> None:
        raise NotImplementedError
