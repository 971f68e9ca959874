"""BENCHMARK BASELINE ONLY — the old design: every connection polls the database itself.

``LegacyPollingConsumer`` reproduces what Quik.day did before push: each
WebSocket connection queries the event log every REALTIME_POLL_INTERVAL on
its own, so the cost is one query per connection per tick. It exists so that
bench/ can measure the multiplexed poller (realtime/poller.py) against it.

It is NOT a mode: REALTIME_MODE cannot select it. realtime/routing.py routes
to it only when the bench-only environment variable
REALTIME_BENCH_LEGACY_POLL=1 is set, and logs a warning when it does.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from realtime import db, events, selectors
from realtime.consumers.base import BaseRunConsumer

logger = logging.getLogger(__name__)

BENCH_ENV_VAR = "REALTIME_BENCH_LEGACY_POLL"


class LegacyPollingConsumer(BaseRunConsumer):
    """One query per connection per tick (the baseline the poller is measured against)."""

    mode = "poll"
    uses_channel_layer = False

    async def follow(self) -> None:
        self._poll_task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while not self.finished:
            await asyncio.sleep(settings.REALTIME_POLL_INTERVAL)
            found = await db.read(selectors.events_between, run_id=self.run_id, after=self.last_seq)
            for event in found:
                text = events.encode_frame(events.event_frame(event))
                await self.deliver(event.seq, text, final=event.type == events.RUN_COMPLETED)

    async def unsubscribe(self) -> None:
        task = getattr(self, "_poll_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
