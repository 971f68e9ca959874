"""Push mode: the run's channel-layer group brings each event as it commits."""

from __future__ import annotations

import logging

from realtime import events
from realtime.consumers.base import BaseRunConsumer

logger = logging.getLogger(__name__)


class RunConsumer(BaseRunConsumer):
    """Streams one run's events to one client (push mode)."""

    mode = "push"

    async def connect(self) -> None:
        self.subscribed = False
        await super().connect()

    async def subscribe(self) -> None:
        await self.channel_layer.group_add(events.group_name(self.run_id), self.channel_name)
        self.subscribed = True

    async def unsubscribe(self) -> None:
        if self.subscribed:
            self.subscribed = False
            try:
                await self.channel_layer.group_discard(events.group_name(self.run_id), self.channel_name)
            except Exception:  # leaving must not fail; expiry cleans up
                logger.warning("group_discard failed for run %s", self.run_id, exc_info=True)

    async def run_event(self, message: dict) -> None:
        """A group message: one committed event, already encoded as a frame."""
        await self.deliver(message["seq"], message["text"], final=message.get("final", False))
