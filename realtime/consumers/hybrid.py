"""Hybrid mode: push, plus the process's slow poller as a safety net.

Redis pub/sub delivers at most once and Redis may blip: an event lost in
transit reaches the client from the log within REALTIME_FALLBACK_INTERVAL
(or with the next pushed event, whose gap is filled first). Duplicates are
dropped by seq in ``deliver``. Failover works as in push.
"""

from __future__ import annotations

from django.conf import settings

from realtime.consumers.push import RunConsumer


class HybridRunConsumer(RunConsumer):
    """Push with a slow poll for events lost in transit."""

    mode = "hybrid"

    def fallback_interval(self) -> float | None:
        return settings.REALTIME_FALLBACK_INTERVAL
