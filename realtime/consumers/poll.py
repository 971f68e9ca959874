"""Poll mode: the process's poller reads the event log; no channel layer at all.

Same frames, seqs, resume and close codes as push: the poller hands this
connection the log's events above ``last_seq`` every REALTIME_POLL_INTERVAL,
through the same ``deliver``. Works with Redis absent or down, on PostgreSQL
or SQLite.
"""

from __future__ import annotations

from django.conf import settings

from realtime.consumers.base import BaseRunConsumer
from realtime.poller import get_poller


class PollingRunConsumer(BaseRunConsumer):
    """Streams one run's events to one client from the event log."""

    mode = "poll"
    uses_channel_layer = False

    async def follow(self) -> None:
        get_poller().watch(self, interval=settings.REALTIME_POLL_INTERVAL)

    async def unsubscribe(self) -> None:
        if self.run_id is not None:
            get_poller().unwatch(self)
