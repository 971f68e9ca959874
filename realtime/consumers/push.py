"""Push mode: the run's channel-layer group brings each event as it commits.

Events arrive through the process's RunHub (realtime/hub.py: one subscription
per run per process), which calls ``deliver``. When the layer fails (joining
fails, the hub's receive raises, or the process's layer probe finds Redis
unreachable) the connection hands itself to the process's poller until the
layer is back. The connection's whole state lives here; the hub, the poller
and the probe (realtime/failover.py) only call the methods of their contracts.
"""

from __future__ import annotations

import logging

from django.conf import settings

from observability import record
from realtime.consumers.base import BaseRunConsumer
from realtime.failover import get_probe
from realtime.hub import get_hub
from realtime.poller import get_poller
from realtime.protocol import frames

logger = logging.getLogger(__name__)


class RunConsumer(BaseRunConsumer):
    """Streams one run's events to one client (push mode, failing over to polling)."""

    mode = "push"

    def init_state(self) -> None:
        super().init_state()
        self.subscribed = False  # a member of the run's group on the layer, through the hub
        self.joined_once = False
        self.degraded = False  # served by the poller until the layer is back
        self.following = False  # connected has been sent: last_seq is meaningful

    def fallback_interval(self) -> float | None:
        """How often the poller reads this run while the layer is healthy (push: never)."""
        return None

    async def subscribe(self) -> None:
        get_probe().register(self, self.channel_layer)
        if not await self.resubscribe():
            self.degrade()

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
        self._sync_watch()

    async def layer_failed(self, error: Exception) -> None:
        await super().layer_failed(error)
        if not self.finished:
            self.degrade()

    # --- Failover (called by this connection and by the process's layer probe) -------------

    def degrade(self) -> None:
        """The layer failed this connection: read its run from the log until the layer is back."""
        if not self.degraded:
            record.transport_changed(self.observed, run_id=self.run_id, degraded=True)
        self.degraded = True
        self._sync_watch()
        get_probe().suspect()

    async def recover(self) -> bool:
        """Rejoin the group; on success stop polling and fill from the log. True when back on push."""
        if not await self.resubscribe():
            return False
        self.degraded = False
        self._sync_watch()
        record.transport_changed(self.observed, run_id=self.run_id, degraded=False)
        await self.catch_up()
        return True

    def layer_names(self) -> tuple[list[str], str | None]:
        """The run's group, received on the process's channel (realtime.hub)."""
        return [frames.group_name(self.run_id)], get_hub(self.channel_layer).channel

    def _sync_watch(self) -> None:
        """Register with the poller at the interval this state needs (or none)."""
        if not self.following or self.finished:
            return
        poller = get_poller()
        interval = settings.REALTIME_POLL_INTERVAL if self.degraded else self.fallback_interval()
        if interval is None:
            poller.unwatch(self)
        else:
            poller.watch(self, interval=interval)

    async def unsubscribe(self) -> None:
        self.following = False
        if self.run_id is not None:
            get_probe().unregister(self)
            get_poller().unwatch(self)
        if self.subscribed:
            self.subscribed = False
            await get_hub(self.channel_layer).leave(self, frames.group_name(self.run_id))
