"""realtime.sockets.socket replaces two of Channels' methods, registered in server.upstream.

ProtocolSocket.__call__ and .dispatch (the base of both WebSocket consumers) are
Channels' AsyncConsumer methods minus the per-connection layer channel and the
per-message database hop. The upstream source they were copied from is pinned
by the registry's "channels-consumer-loop" reach (tests/test_upstream.py fails
when it changes); this test holds that nothing else of Channels is replaced.
"""

from channels.generic.websocket import AsyncWebsocketConsumer

from realtime.runlist.user_stream import RunListConsumer
from realtime.sockets.run import RunConsumer
from realtime.sockets.socket import ProtocolSocket
from server import upstream

COPIED = {read.where.rpartition(".")[2] for read in upstream.REACHES["channels-consumer-loop"].reads}


def test_we_replace_only_those_of_channels_methods():
    channels_names = {
        name for klass in AsyncWebsocketConsumer.__mro__ for name in vars(klass) if not name.startswith("__")
    }
    # connect/disconnect/receive are the hooks Channels means subclasses to write.
    hooks = {"connect", "disconnect", "receive"}
    # send and websocket_connect are wrapped (they call Channels' own), not replaced.
    wrapped = {"send", "websocket_connect"}
    replaced = (
        {name for name in vars(ProtocolSocket) if name in channels_names or name == "__call__"}
        - hooks
        - wrapped
    )
    assert replaced == COPIED == {"__call__", "dispatch"}
    for consumer in (RunConsumer, RunListConsumer):
        assert not {name for name in vars(consumer) if name in channels_names or name == "__call__"} - hooks
