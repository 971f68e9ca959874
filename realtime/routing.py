"""WebSocket routes. The consumer class follows settings.REALTIME_MODE.

push → RunConsumer, poll → PollingRunConsumer, hybrid → HybridRunConsumer
(realtime/consumers/). The mode is read per connection, so a settings
override (tests) takes effect without re-importing the routes. The legacy
per-connection poller (realtime/baseline.py) is reachable only through the
bench-only REALTIME_BENCH_LEGACY_POLL=1, never through REALTIME_MODE.
"""

import logging
import os

from django.conf import settings
from django.urls import re_path

from realtime.baseline import BENCH_ENV_VAR, LegacyPollingConsumer
from realtime.consumers import CONSUMER_FOR_MODE

logger = logging.getLogger(__name__)

_apps: dict[type, object] = {}


def run_consumer() -> type:
    """The consumer class that serves a new connection now."""
    if os.environ.get(BENCH_ENV_VAR) == "1":
        return LegacyPollingConsumer
    return CONSUMER_FOR_MODE[settings.REALTIME_MODE]


async def run_consumer_app(scope, receive, send):
    """ASGI app of /ws/runs/<id>/: hands the connection to the current mode's consumer."""
    consumer = run_consumer()
    app = _apps.get(consumer)
    if app is None:
        app = _apps[consumer] = consumer.as_asgi()
    return await app(scope, receive, send)


if os.environ.get(BENCH_ENV_VAR) == "1":
    logger.warning(
        "%s=1: WebSockets use the legacy per-connection poller (benchmark baseline only)", BENCH_ENV_VAR
    )

# Any run id matches here so that a malformed one gets close code 4400,
# not a failed handshake.
websocket_urlpatterns = [
    re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", run_consumer_app),
]
