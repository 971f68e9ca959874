"""realtime.consumers.socket replaces two of Channels' methods; re-read them when an upgrade changes them.

ProtocolSocket.__call__ and .dispatch (the base of both WebSocket consumers) are
Channels' AsyncConsumer methods
minus the per-connection layer channel and the per-message database hop. If
the pinned Channels' versions of these methods change, these hashes differ:
read the new upstream code, carry over what applies, then record the new
hashes here.
"""

import hashlib
import inspect

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime.consumers.base import BaseRunConsumer
from realtime.consumers.socket import ProtocolSocket
from realtime.consumers.user_stream import RunListConsumer

UPSTREAM_SHA256 = {
    "__call__": "e52238720872dbc3f854519bc971aa7eb41553e63c8729081549ce42465ee419",
    "dispatch": "39f34e7d4fb0f6552de4ade665b943fe78137379702af6b58c79a14c49a75520",
}


def _sha256(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def test_the_upstream_methods_we_replace_are_the_ones_we_read():
    assert {name: _sha256(getattr(AsyncConsumer, name)) for name in UPSTREAM_SHA256} == UPSTREAM_SHA256


def test_we_replace_only_those_of_channels_methods():
    upstream = {
        name for klass in AsyncWebsocketConsumer.__mro__ for name in vars(klass) if not name.startswith("__")
    }
    # connect/disconnect/receive are the hooks Channels means subclasses to write.
    hooks = {"connect", "disconnect", "receive"}
    # send and websocket_connect are wrapped (they call Channels' own), not replaced.
    wrapped = {"send", "websocket_connect"}
    replaced = (
        {name for name in vars(ProtocolSocket) if name in upstream or name == "__call__"} - hooks - wrapped
    )
    assert replaced == set(UPSTREAM_SHA256)
    for consumer in (BaseRunConsumer, RunListConsumer):
        assert not {name for name in vars(consumer) if name in upstream or name == "__call__"} - hooks
