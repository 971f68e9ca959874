"""WebSocket routes: one consumer class per endpoint (realtime/consumers/).

The run stream's delivery policy follows settings.REALTIME_MODE (push, poll,
hybrid); it is read per connection (realtime.consumers.stream.Policy), so a
settings override (tests) takes effect without re-importing the routes.
"""

from django.urls import re_path

from realtime.consumers.run import RunConsumer
from realtime.consumers.unrouted import UnroutedSocket
from realtime.consumers.user_stream import RunListConsumer

# Any run id matches here so that a malformed one gets close code 4400,
# not a failed handshake; any other path gets 4404 (the last route).
websocket_urlpatterns = [
    re_path(r"^ws/runs/$", RunListConsumer.as_asgi()),
    re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", RunConsumer.as_asgi()),
    re_path(r"", UnroutedSocket.as_asgi()),
]
