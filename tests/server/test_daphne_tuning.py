"""server.daphne_tuning: Daphne's close timeout, lean queues, and what the consumers read of its sockets."""

import functools
import os
import subprocess
import sys
import types

import pytest

from realtime.protocol.close_codes import CLOSE_TOO_BIG
from server import daphne_tuning, upstream


def test_daphne_waits_for_a_slow_client_to_answer_its_close():
    from daphne.ws_protocol import WebSocketFactory

    assert daphne_tuning.wait_longer_for_close_replies() is True
    factory = WebSocketFactory(server_class=None)
    factory.setProtocolOptions(autoPingTimeout=30, allowNullOrigin=True)  # as daphne.server does
    # 30 s, as docs/reliability.md says: autobahn's 1 s lost a slow client's last frame.
    assert factory.closeHandshakeTimeout == daphne_tuning.CLOSE_HANDSHAKE_TIMEOUT == 30.0
    assert factory.failByDrop is False  # a protocol error is a close frame (1007, 1002), not a reset


def test_on_a_daphne_it_was_not_read_against_the_lean_queue_is_skipped_and_the_server_starts():
    """The ASGI entry point (what Daphne imports at start-up) on daphne 4.3 and autobahn 26.11.1: the
    speed patch is skipped with one WARNING line, the close timeout (correctness) still applied."""
    script = (
        "import daphne.server\n"
        "import quikday.asgi\n"
        "from daphne.ws_protocol import WebSocketFactory\n"
        "assert not getattr(daphne.server.Server.create_application, 'realtime_tuned', False)\n"
        "assert WebSocketFactory.__init__.realtime_tuned\n"
        "print('ok')\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "quikday.settings",
        upstream.PRETEND_VERSIONS_ENV: "daphne=4.3.0,autobahn=26.11.1",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
    warnings = [line for line in done.stderr.splitlines() if "upstream reach" in line]
    assert any("daphne-application-queue (speed" in line and "skipped" in line for line in warnings), warnings
    assert len([line for line in warnings if "daphne-application-queue" in line]) == 1


async def test_a_lean_queue_hands_items_over_in_order_to_whoever_waits():
    import asyncio

    queue = daphne_tuning.LeanQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait("connect")
    queue.put_nowait("receive")
    assert await waiting == "connect"
    assert queue.qsize() == 1
    assert await queue.get() == "receive"
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_cancelled_get_leaves_its_item_to_the_next_getter():
    """Daphne cancels an application that outlives its socket; the item must not be lost with it."""
    import asyncio

    queue = daphne_tuning.LeanQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("message")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs
    assert await second == "message"
    assert first.cancelled()


def test_daphne_gives_each_application_a_lean_queue():
    """Under Daphne (daphne.server imported first), create_application is the patched copy, and does
    what Daphne's does: the application started with the connection's scope, a queue as its
    ``receive`` and ``partial(handle_reply, protocol)`` as its ``send``, its task noted on the connection.
    """
    script = (
        "import asyncio, types\n"
        "import daphne.server\n"
        "from server import daphne_tuning\n"
        "import quikday.asgi\n"
        "Server = daphne.server.Server\n"
        "assert Server.create_application.realtime_tuned\n"
        "got = []\n"
        "async def application(scope, receive, send):\n"
        "    got.append((scope, await receive(), send.args, send('reply')))\n"
        "async def main():\n"
        "    protocol = object()\n"
        "    server = types.SimpleNamespace(connections={protocol: {}}, application=application,\n"
        "                                   handle_reply=lambda protocol, message: message)\n"
        "    queue = Server.create_application(server, protocol, {'type': 'websocket'})\n"
        "    assert isinstance(queue, daphne_tuning.LeanQueue)\n"
        "    queue.put_nowait({'type': 'websocket.connect'})\n"
        "    await server.connections[protocol]['application_instance']\n"
        "    scope = {'type': 'websocket', 'asgi': {'version': '3.0'}}\n"
        "    assert got == [(scope, {'type': 'websocket.connect'}, (protocol,), 'reply')], got\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "quikday.settings"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


# --- What the consumers read and control of a Daphne connection (a real Twisted write buffer) ---


class _DaphneTransport:
    """Builds the transport under a Daphne connection: Twisted's FileDescriptor on a memory reactor.

    Its "client" takes ``taking`` bytes of each write Twisted attempts.
    """

    @staticmethod
    def make():
        from twisted.internet import abstract
        from twisted.internet.testing import MemoryReactor

        class Transport(abstract.FileDescriptor):
            taking = 0

            def writeSomeData(self, data):
                return min(self.taking, len(data))

        transport = Transport(reactor=MemoryReactor())
        transport.connected = 1
        transport.startReading()
        return transport


def _daphne_send(transport):
    """What Daphne hands the application as ``send``: ``partial(server.handle_reply, protocol)``."""

    def handle_reply(protocol, message):
        raise AssertionError("not sent in these tests")

    return functools.partial(handle_reply, types.SimpleNamespace(transport=transport))


async def _other_servers_send(message):
    """``send`` under any other server (or the test communicator): no transport to read."""


def test_unsent_bytes_is_what_the_client_has_not_taken_of_a_daphne_connection():
    transport = _DaphneTransport.make()
    send = _daphne_send(transport)
    assert daphne_tuning.unsent_bytes(send) == 0
    transport.write(b"a" * 1000)  # in Twisted's list of pending writes (_tempDataLen)
    assert daphne_tuning.unsent_bytes(send) == 1000
    transport.taking = 300
    transport.doWrite()  # the client took 300: the rest is in dataBuffer past offset
    assert (len(transport.dataBuffer), transport.offset) == (1000, 300)
    assert daphne_tuning.unsent_bytes(send) == 700
    transport.write(b"b" * 50)  # both buffers hold some
    assert daphne_tuning.unsent_bytes(send) == 750
    assert daphne_tuning.unsent_bytes(_other_servers_send) is None
    assert daphne_tuning.unsent_bytes(functools.partial(_other_servers_send)) is None


def test_each_read_of_a_daphne_connection_takes_at_most_4_kib():
    """docs/reliability.md: Twisted read 64 KiB at a time, thousands of pings parsed in one go."""
    transport = _DaphneTransport.make()
    assert transport.bufferSize == 2**16
    assert daphne_tuning.read_in_small_chunks(_daphne_send(transport)) is True
    assert transport.bufferSize == daphne_tuning.CLIENT_READ_BYTES == 4096
    assert daphne_tuning.read_in_small_chunks(_other_servers_send) is False


@pytest.mark.parametrize("then_drop", [False, True])
def test_holding_a_daphne_connections_reading_stops_reading_then_reads_again_or_drops(monkeypatch, then_drop):
    import asyncio

    later = []  # the loop's clock is moved, not waited for: the scheduled call is run by hand
    loop = types.SimpleNamespace(call_later=lambda delay, callback: later.append((delay, callback)))
    monkeypatch.setattr(asyncio, "get_running_loop", lambda: loop)
    transport = _DaphneTransport.make()
    reactor = transport.reactor
    assert transport in reactor.readers
    assert daphne_tuning.hold_reading(_daphne_send(transport), seconds=0.25, then_drop=then_drop) is True
    assert transport not in reactor.readers  # its flood stays in the kernel, and on the client
    [(delay, callback)] = later
    assert delay == 0.25
    callback()
    if then_drop:
        assert transport.disconnecting and transport not in reactor.readers
    else:
        assert not transport.disconnecting and transport in reactor.readers
    assert daphne_tuning.hold_reading(_other_servers_send, seconds=1.0) is False
    assert len(later) == 1


async def test_a_lean_queue_wakes_its_getters_first_come_first_served():
    import asyncio

    queue = daphne_tuning.LeanQueue()
    first = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert (await first, await second) == ("a", "b")


def test_a_lean_queues_get_nowait_hands_items_over_in_order():
    queue = daphne_tuning.LeanQueue()
    for item in ("connect", "receive", "disconnect"):
        queue.put_nowait(item)
    assert [queue.get_nowait() for _ in range(3)] == ["connect", "receive", "disconnect"]
    assert queue.empty() and queue.qsize() == 0


@pytest.mark.parametrize("opcode", [daphne_tuning.PING, daphne_tuning.PONG])
def test_a_daphne_connection_hands_its_control_frames_to_an_application_that_asks(opcode):
    """Issue 21 #4: autobahn answered every client ping itself, below the rate limit and the buffer bound."""
    from daphne.ws_protocol import WebSocketProtocol

    assert daphne_tuning.hand_control_frames_to_applications() is True  # idempotent: asgi.py applied it
    answered = []
    protocol = WebSocketProtocol()
    protocol.state = protocol.STATE_OPEN
    protocol.sendPong = answered.append
    protocol.application_queue = daphne_tuning.LeanQueue()
    control_frame = {daphne_tuning.PING: protocol.onPing, daphne_tuning.PONG: protocol.onPong}[opcode]

    control_frame(b"not asked")  # autobahn's own way: a ping is answered at once
    assert answered == ([b"not asked"] if opcode == daphne_tuning.PING else [])
    assert protocol.application_queue.empty()

    send = functools.partial(lambda protocol, message: None, protocol)
    assert daphne_tuning.judge_control_frames(send) is True
    control_frame(b"asked")
    assert protocol.application_queue.get_nowait() == {
        "type": daphne_tuning.CONTROL_FRAME_MESSAGE,
        "opcode": opcode,
        "payload": b"asked",
    }
    protocol.state = protocol.STATE_CLOSING
    control_frame(b"closing")
    assert protocol.application_queue.empty() and len(answered) <= 1  # nothing after the open state
    daphne_tuning.send_control_pong(send, b"judged")
    assert answered[-1] == b"judged"
    assert daphne_tuning.judge_control_frames(_other_servers_send) is False


def test_a_message_over_daphnes_limit_is_failed_with_4009():
    """Issue 21 #9: autobahn closed it 1009 where docs/protocol.md says 4009 for a frame too big."""
    from daphne.ws_protocol import WebSocketProtocol

    assert daphne_tuning.close_too_big_messages_with(CLOSE_TOO_BIG) is True  # idempotent: asgi.py applied it
    failed = []
    protocol = WebSocketProtocol()
    protocol._fail_connection = lambda code, reason: failed.append((code, reason))
    protocol._max_message_size_exceeded(2**20 + 1, 2**20, "received WebSocket frame size 1048577 exceeds …")
    assert failed == [(4009, "a client frame is at most 1048576 bytes")]


def test_a_connection_starts_with_its_options_copied_and_none_pretty_printed(monkeypatch):
    """autobahn formats ~40 options for a debug line that is off on every connect (an eighth of a
    connect storm's CPU, docs/benchmarks.md): with the web process's tuning, nothing is formatted."""
    from autobahn.websocket import protocol
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    from server import daphne_connect

    formatted = []
    monkeypatch.setattr(protocol, "pformat", lambda value, *a, **k: formatted.append(value) or "")
    assert daphne_connect.skip_unlogged_option_dump() is True
    factory = WebSocketFactory(server_class=None)
    factory.setProtocolOptions(autoPingTimeout=30, allowNullOrigin=True)  # as daphne.server does
    connection = WebSocketProtocol()
    connection.factory = factory
    protocol.WebSocketProtocol._connectionMade(connection)
    assert formatted == []
    assert (
        connection.autoPingTimeout == 30 and connection.closeHandshakeTimeout == factory.closeHandshakeTimeout
    )
    assert protocol.pformat is not daphne_connect._unformatted  # the module's own again after the call
