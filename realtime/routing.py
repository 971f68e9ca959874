"""WebSocket routes. The consumer class follows settings.REALTIME_MODE."""

from django.urls import re_path

from realtime.consumers import RunConsumer


def run_consumer():
    return RunConsumer


# Any run id matches here so that a malformed one gets close code 4400,
# not a failed handshake.
websocket_urlpatterns = [
    re_path(r"^ws/runs/(?P<run_id>[^/]+)/$", run_consumer().as_asgi()),
]
