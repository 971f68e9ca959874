"""What every WebSocket endpoint does the same way: client frames, sending to a client that may be gone.

``ProtocolSocket`` is the base of /ws/runs/<id>/ (base.BaseRunConsumer) and
/ws/runs/ (user_stream.RunListConsumer). Each says how it writes its own
``pong``, ``error`` and refusal (their frames differ in ``run_id`` and ``seq``);
what a client frame means, its size limit and its rate limit are judged once,
by realtime.client_frames.
"""

from __future__ import annotations

import asyncio

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import daphne_tuning
from realtime.client_frames import ClientFrameGate, Close, Error, Ignore, Pong
from realtime.close_codes import CLOSE_RATE_LIMITED

try:  # Daphne's WebSocket layer; absent under other ASGI servers and in unit tests' communicator
    from autobahn.exception import Disconnected as _SocketGone
except ImportError:  # pragma: no cover
    _SocketGone = ConnectionError


class ProtocolSocket(AsyncWebsocketConsumer):
    """A socket of the protocol: answers client frames, refuses with an error frame and a close code."""

    finished = False  # closing or closed: nothing more is sent or answered
    frame_gate: ClientFrameGate | None = None
    reading_held_until = 0.0  # the event loop's time until which the client's socket is not read
    # A client closed for flooding has this long to read its close frame before
    # its connection is dropped (its socket is not read meanwhile).
    ABUSE_CLOSE_GRACE_SECONDS = 2.0

    async def websocket_connect(self, message: dict) -> None:
        daphne_tuning.read_in_small_chunks(self.base_send)
        await super().websocket_connect(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.finished:
            return  # closing (refused, too big, run finished): nothing more is answered
        if self.frame_gate is None:
            self.frame_gate = ClientFrameGate.from_settings()
        verdict = self.frame_gate.judge(text_data, bytes_data)
        if isinstance(verdict, Ignore) or (isinstance(verdict, Error) and verdict.code == "rate_limited"):
            # Over its budget: leave the rest in the client's socket until the budget has room.
            self._hold_reading(self.frame_gate.seconds_until_next_frame())
        if isinstance(verdict, Pong):
            if not self._client_behind():  # a client that does not read gets no more pongs
                await self._pong()
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

    def _client_behind(self) -> bool:
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
            self.finished = True

    async def _refuse(self, close_code: int, message: str) -> None:
        """Say why in an error frame, then close with the protocol's code."""
        await self._error(str(close_code), message)
        self.finished = True
        await self.close(code=close_code)

    async def _pong(self) -> None:
        raise NotImplementedError

    async def _error(self, code: str, message: str) -> None:
        raise NotImplementedError
