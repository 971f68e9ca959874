"""WebSocket consumers for /ws/runs/<run_id>/, one class per mode.

All modes speak the same protocol (docs/protocol.md); see base.py for it and
push.py / poll.py / hybrid.py for how each mode receives events.
"""

from realtime.consumers.base import BaseRunConsumer
from realtime.consumers.hybrid import HybridRunConsumer
from realtime.consumers.poll import PollingRunConsumer
from realtime.consumers.push import RunConsumer
from realtime.protocol.close_codes import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
)

CONSUMER_FOR_MODE = {"push": RunConsumer, "poll": PollingRunConsumer, "hybrid": HybridRunConsumer}

__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_FORBIDDEN",
    "CLOSE_NORMAL",
    "CLOSE_NOT_FOUND",
    "CLOSE_RATE_LIMITED",
    "CLOSE_TOO_BIG",
    "CLOSE_UNAUTHENTICATED",
    "CONSUMER_FOR_MODE",
    "BaseRunConsumer",
    "HybridRunConsumer",
    "PollingRunConsumer",
    "RunConsumer",
]
