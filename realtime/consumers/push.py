"""Push mode: the run's channel-layer group brings each event as it commits.

Events arrive through the process's RunHub (realtime/hub.py: one subscription
per run per process), which calls ``deliver``. When the layer fails (joining
fails, the hub's receive raises, or the process's layer probe finds Redis
unreachable) the connection is handed to the process's poller until the layer
is back — realtime/failover.py holds that mechanism; this class only says how
to join and leave.
"""

from __future__ import annotations

import logging

from realtime import failover, frames
from realtime.consumers.base import BaseRunConsumer
from realtime.hub import get_hub
from realtime.poller import get_poller

logger = logging.getLogger(__name__)


class RunConsumer(BaseRunConsumer):
    """Streams one run's events to one client (push mode, failing over to polling)."""

    mode = "push"

    def init_state(self) -> None:
        super().init_state()
        self.subscribed = False
        self.joined_once = False
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
        """Join (again) the run's group; False when the layer fails.

        After the first join, a join re-adds the membership on the layer: the
        failover probe calls this when Redis is back (a restarted Redis forgot
        it) and to refresh the core layer's expiring memberships.
        """
        try:
            await get_hub(self.channel_layer).join(
                self, frames.group_name(self.run_id), refresh=self.joined_once
            )
        except Exception as error:  # noqa: BLE001 - any layer failure means "fail over"
            # Debug: the layer probe reports an outage once for every watcher.
            logger.debug("joining the group of run %s failed: %s", self.run_id, error)
            self.subscribed = False
            return False
        self.subscribed = self.joined_once = True
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
            await get_hub(self.channel_layer).leave(self, frames.group_name(self.run_id))
