"""The answer to a WebSocket handshake on a path no stream serves: accept, say so, close 4404.

Without it Channels' URLRouter raised "No route found" inside Daphne: an HTTP
500 to the client and an ERROR traceback in the log for every anonymous
request to a wrong path (a flood of either, on demand). Refusing the handshake
instead would answer 403 (all Daphne can send before accepting), which reads
as a refused Origin; a close code says what is wrong, as for a missing run.
"""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from realtime.protocol import frames
from realtime.protocol.close_codes import CLOSE_NOT_FOUND

MESSAGE = "no such endpoint: the streams are /ws/runs/ and /ws/runs/<run id>/"


class UnroutedSocket(AsyncWebsocketConsumer):
    """Any path the routes do not match: an ``error`` frame with code ``"4404"``, then close 4404."""

    channel_layer_alias = None  # it receives nothing from the layer: no channel of its own

    async def connect(self) -> None:
        await self.accept()
        error = {"code": str(CLOSE_NOT_FOUND), "message": MESSAGE}
        frame = frames.build_frame(type="error", run_id="", seq=0, ts=timezone.now(), payload=error)
        await self.send(text_data=frames.encode_frame(frame))
        await self.close(code=CLOSE_NOT_FOUND)
