"""Push mode: the run's channel-layer group brings each event as it commits.

When the layer fails (group_add or receive raises, or the process's layer
probe finds Redis unreachable) the connection is handed to the process's
poller until the layer is back — realtime/failover.py holds that mechanism;
this class only says how to join and leave the group.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from realtime import events, failover
from realtime.consumers.base import BaseRunConsumer
from realtime.poller import get_poller

logger = logging.getLogger(__name__)


class RunConsumer(BaseRunConsumer):
    """Streams one run's events to one client (push mode, failing over to polling)."""

    mode = "push"

    def init_state(self) -> None:
        super().init_state()
        self.subscribed = False
        self.degraded = False  # served by the poller until the layer is back
        self.following = False  # connected has been sent: last_seq is meaningful

    def fallback_interval(self) -> float | None:
        """How often the poller reads this run while the layer is healthy (push: never)."""
        return None

    async def subscribe(self) -> None:
        failover.get_probe().register(self)
        if not await self.resubscribe():
            failover.degrade(self)

    async def resubscribe(self) -> bool:
        """Join (again) the run's group; False when the layer fails."""
        if not await self.open_channel():
            return False
        try:
            await asyncio.wait_for(
                self.channel_layer.group_add(events.group_name(self.run_id), self.channel_name),
                settings.REALTIME_PUBLISH_TIMEOUT,
            )
        except Exception as error:  # noqa: BLE001 - any layer failure means "fail over"
            logger.warning("group_add for run %s failed: %s", self.run_id, error)
            self.subscribed = False
            return False
        self.subscribed = True
        if self.finished:  # the client left while we were joining
            await self.unsubscribe()
        return True

    async def follow(self) -> None:
        self.following = True
        failover.sync_watch(self)

    async def layer_failed(self, error: Exception) -> None:
        await super().layer_failed(error)
        if not self.finished:
            failover.degrade(self)

    async def unsubscribe(self) -> None:
        self.following = False
        if self.run_id is not None:
            failover.get_probe().unregister(self)
            get_poller().unwatch(self)
        if self.subscribed:
            self.subscribed = False
            try:
                await self.channel_layer.group_discard(events.group_name(self.run_id), self.channel_name)
            except Exception:  # leaving must not fail; expiry cleans up
                logger.warning("group_discard failed for run %s", self.run_id, exc_info=True)

    async def run_event(self, message: dict) -> None:
        """A group message: one committed event, already encoded as a frame."""
        await self.deliver(message["seq"], message["text"], final=message.get("final", False))
