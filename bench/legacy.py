"""BENCHMARK BASELINE ONLY — the old design: every connection polls the database itself.

``LegacyPollingConsumer`` reproduces what Quik.day did before push: each
WebSocket connection queries the event log every REALTIME_POLL_INTERVAL on
its own, so the cost is one query per connection per tick. It exists so that
the bench can measure the multiplexed poller (realtime/delivery/poller.py) against it.

It is not part of the product: the bench serves it from its own ASGI
application, ``bench.legacy:application`` (the product's, with /ws/runs/
routed here), which the bench starts Daphne with for mode (a).
"""

from __future__ import annotations

import asyncio
import os

from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")

from channels.routing import URLRouter
from django.urls import re_path

from quikday import asgi
from realtime.access.auth import OriginCheckMiddleware, RealtimeAuthMiddleware
from realtime.protocol import frames
from realtime.reads import selectors, threads
from realtime.sockets.run import RunConsumer, RunStream
from realtime.sockets.stream import Policy


class LegacyPollingStream(RunStream):
    """A run's stream that queries the log itself, every tick (not through the process's poller)."""

    _poll_task: asyncio.Task | None = None

    def _sync_poll(self) -> None:
        if self.following and not self.closed and self._poll_task is None:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while not self.closed:
            await asyncio.sleep(settings.REALTIME_POLL_INTERVAL)
            found = await threads.read(selectors.events_between, run_id=self.run_id, after=self.last_seq)
            for event in found:
                await self.on_event(event.seq, frames.encode_event(event), final=frames.is_final(event.type))

    async def release(self) -> None:
        task = self._poll_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await super().release()


class LegacyPollingConsumer(RunConsumer):
    """One query per connection per tick (the baseline the poller is measured against)."""

    def init_state(self) -> None:
        self.stream = LegacyPollingStream(self, policy=Policy.of_mode("poll"))
        self.uses_channel_layer = False


websocket_urlpatterns = [re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", LegacyPollingConsumer.as_asgi())]

_websocket_app = OriginCheckMiddleware(RealtimeAuthMiddleware(URLRouter(websocket_urlpatterns)))


async def application(scope, receive, send):
    """The product's application, except that WebSockets reach the legacy consumer."""
    if scope["type"] == "websocket":
        return await _websocket_app(scope, receive, send)
    return await asgi.application(scope, receive, send)
