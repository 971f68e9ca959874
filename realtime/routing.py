"""WebSocket routes. The consumer class follows settings.REALTIME_MODE.

push → RunConsumer, poll → PollingRunConsumer, hybrid → HybridRunConsumer
(realtime/consumers/). The mode is read per connection, so a settings
override (tests) takes effect without re-importing the routes.
"""

from django.conf import settings
from django.urls import re_path

from realtime.consumers import CONSUMER_FOR_MODE
from realtime.consumers.unrouted import UnroutedSocket
from realtime.consumers.user_stream import RunListConsumer

_apps: dict[type, object] = {}


def run_consumer() -> type:
    """The consumer class that serves a new connection now."""
    return CONSUMER_FOR_MODE[settings.REALTIME_MODE]


async def run_consumer_app(scope, receive, send):
    """ASGI app of /ws/runs/<id>/: hands the connection to the current mode's consumer."""
    consumer = run_consumer()
    app = _apps.get(consumer)
    if app is None:
        app = _apps[consumer] = consumer.as_asgi()
    return await app(scope, receive, send)


# Any run id matches here so that a malformed one gets close code 4400,
# not a failed handshake; any other path gets 4404 (the last route).
websocket_urlpatterns = [
    re_path(r"^ws/runs/$", RunListConsumer.as_asgi()),
    re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", run_consumer_app),
    re_path(r"", UnroutedSocket.as_asgi()),
]
