"""Quiet logs while Redis is down: one warning, then one line when it is back.

channels-redis' pub/sub layer logs "Unexpected exception in receive task" with
a full traceback every time its background receive fails to reach Redis —
about once a second for as long as the outage lasts. The layer probe
(realtime/delivery/failover.py) already tells the operator once that the layer is
unreachable and once that it is back; the filter drops channels-redis' repeats
of a connection failure (any other error of it is still logged).
"""

import asyncio
import logging

import redis.exceptions

_CONNECTION_FAILURES = (
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class LayerConnectionFailureFilter(logging.Filter):
    """Drops a record whose exception is a failure to reach Redis."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            if isinstance(error, _CONNECTION_FAILURES):
                return False
            error = error.__cause__ or error.__context__
        return True
