"""WebSocket routes: one consumer class per endpoint (realtime/sockets/).

The run stream's delivery policy follows settings.REALTIME_MODE (push, poll,
hybrid); it is read per connection (realtime.sockets.stream.Policy), so a
settings override (tests) takes effect without re-importing the routes.
"""

from django.urls import re_path

from realtime.runlist.user_stream import RunListConsumer
from realtime.sockets.run import RunConsumer
from realtime.sockets.unrouted import UnroutedSocket

# Any run id matches here so that a malformed one gets close code 4400,
# not a failed handshake; any other path gets 4404 (the last route).
websocket_urlpatterns = [
    re_path(r"^ws/runs/$", RunListConsumer.as_asgi()),
    re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", RunConsumer.as_asgi()),
    re_path(r"", UnroutedSocket.as_asgi()),
]
