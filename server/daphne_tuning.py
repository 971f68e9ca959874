"""Daphne's WebSocket stack, tuned at start-up: per-connection costs, close timeout, reads, pings.

Applied once by quikday/asgi.py; each change is measured in docs/benchmarks.md.
What each one relies on of Daphne and Twisted is registered in server.upstream
("daphne-*", "twisted-write-buffer"), which says whether to apply it on the
installed release: a speed patch on a release it was not read against is
skipped (logged, in /metrics and on the Realtime page), and the service starts.
"""

from __future__ import annotations

import functools
import gc
from typing import Any

from server import daphne_connect, upstream

# How long the server waits for a client to answer its close frame before it
# drops the connection. autobahn's default is 1 s, and it then *aborts* the TCP
# connection (RST), which discards what the client had not read yet — the
# run_completed frame just before the close included. A client more than 1 s
# behind (the bench's, at 4,000 frames/s) lost it; now only one 30 s behind.
CLOSE_HANDSHAKE_TIMEOUT = 30.0


def wait_longer_for_close_replies() -> bool:
    """Daphne's WebSocket factory, made with ``closeHandshakeTimeout`` = CLOSE_HANDSHAKE_TIMEOUT
    and ``failByDrop`` off.

    With ``failByDrop`` on (autobahn's default) a client's protocol error — a
    text frame that is not UTF-8 above all — aborted the TCP connection: the
    client saw a reset (1006), not a reason. Off, autobahn closes properly
    with the code the RFC gives (1007 for invalid UTF-8, 1002 for a protocol
    violation).
    """
    try:
        from daphne import ws_protocol
    except ImportError:
        return False
    if not upstream.usable("daphne-close-handshake"):
        return False
    WebSocketFactory = ws_protocol.WebSocketFactory
    if getattr(WebSocketFactory.__init__, "realtime_tuned", False):
        return True
    original = WebSocketFactory.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT, failByDrop=False)

    __init__.realtime_tuned = True
    WebSocketFactory.__init__ = __init__
    return True


# What the functions below read of a Daphne connection is registered in server.upstream:
# "daphne-connection-transport" (Daphne's send holds the protocol) and "twisted-write-buffer"
# (a transport's private write buffer). Each read falls back to "nothing to measure" if absent.


def _transport(send: Any) -> Any:
    """The Twisted transport under a Daphne connection's ASGI ``send``, or None under any other server.

    ``send`` is the ASGI send callable Daphne gave the application, a partial of
    its ``handle_reply`` on the connection's protocol.
    """
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    return getattr(protocol, "transport", None)


def unsent_bytes(send: Any) -> int | None:
    """How many bytes written to a Daphne connection its client has not taken yet, or None.

    What the client's TCP window did not take waits in Twisted's write buffer
    of the connection's transport, growing without bound for a client that
    stops reading. None under any other server (or the test communicator):
    nothing to measure, nothing bounded.
    """
    transport = _transport(send)
    buffered = getattr(transport, "dataBuffer", None)
    if buffered is None:
        return None
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


# How much of a client's socket one read takes: the largest client frame this
# protocol needs is a ping (REALTIME_MAX_CLIENT_FRAME is a bound, not a need).
CLIENT_READ_BYTES = 4096


def read_in_small_chunks(send: Any) -> bool:
    """Make each read of a Daphne connection take at most CLIENT_READ_BYTES.

    Twisted reads 64 KiB at a time, and autobahn parses every frame in it —
    thousands of pings — before the event loop serves anyone else: one
    flooding client held every other client of the process that long. A
    smaller read bounds that pause. False under any other server.
    """
    transport = _transport(send)
    if transport is None or not hasattr(transport, "bufferSize"):
        return False
    transport.bufferSize = CLIENT_READ_BYTES
    return True


def hold_reading(send: Any, *, seconds: float, then_drop: bool = False) -> bool:
    """Read nothing more from a Daphne connection for ``seconds``; then read again, or drop it.

    autobahn parses every frame of what Twisted read (64 KiB, thousands of small
    frames) in one go, before the application sees any: a client flooding
    frames costs the process's event loop that time however the consumer
    answers. Not reading its socket leaves the rest of its flood in the kernel
    and, through TCP, on the client. ``then_drop`` closes the connection
    afterwards (a client closed for abuse whose close reply is not awaited).
    False under any other server.
    """
    import asyncio

    transport = _transport(send)
    if transport is None or not hasattr(transport, "pauseProducing"):
        return False
    transport.pauseProducing()
    after = transport.loseConnection if then_drop else transport.resumeProducing
    asyncio.get_running_loop().call_later(seconds, after)
    return True


# The message a Daphne connection's application receives for each RFC 6455
# ping or pong of its client, once it asked for them (judge_control_frames).
CONTROL_FRAME_MESSAGE = "realtime.control_frame"
PING, PONG = 0x9, 0xA


def hand_control_frames_to_applications() -> bool:
    """Daphne's WebSocket protocol, handing a client's pings and pongs to an application that asks.

    autobahn answers every ping with a pong itself, below the application: no
    rate limit saw them, and a client that never read its pongs grew the
    process's write buffer without bound. On a connection whose application
    called judge_control_frames, each ping or pong becomes a
    CONTROL_FRAME_MESSAGE (``opcode``, ``payload``) in its input queue, after the
    data frames read before it, and is answered only by send_control_pong.
    autobahn's own keep-alive bookkeeping (its pings' pongs) runs before
    ``onPong`` and is unchanged. False when Daphne is not installed.
    """
    try:
        from daphne import ws_protocol
    except ImportError:
        return False
    if not upstream.usable("autobahn-control-frames"):
        return False
    WebSocketProtocol = ws_protocol.WebSocketProtocol
    if getattr(WebSocketProtocol.onPing, "realtime_tuned", False):
        return True
    originals = {PING: WebSocketProtocol.onPing, PONG: WebSocketProtocol.onPong}

    def handler(opcode: int):
        def on_control_frame(self, payload: bytes) -> None:
            queue = getattr(self, "application_queue", None)
            if not getattr(self, "realtime_judges_control_frames", False) or queue is None:
                originals[opcode](self, payload)
            elif self.state == self.STATE_OPEN:
                queue.put_nowait({"type": CONTROL_FRAME_MESSAGE, "opcode": opcode, "payload": payload})

        on_control_frame.realtime_tuned = True
        return on_control_frame

    WebSocketProtocol.onPing = handler(PING)
    WebSocketProtocol.onPong = handler(PONG)
    return True


def judge_control_frames(send: Any) -> bool:
    """Have this Daphne connection's pings and pongs handed to its application (see above).

    False under any other server, which has no control frames to hand over.
    """
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    if protocol is None or not hasattr(protocol, "sendPong"):
        return False
    protocol.realtime_judges_control_frames = True
    return True


def send_control_pong(send: Any, payload: bytes) -> None:
    """Answer a client's control ping of a Daphne connection (its payload echoed, as RFC 6455 says)."""
    protocol = send.args[0]
    protocol.sendPong(payload)


def close_too_big_messages_with(code: int) -> bool:
    """Daphne's WebSocket protocol, closing a client message over its size limit with ``code``, not 1009.

    Past Daphne's ``--websocket_max_frame_size`` / ``_max_message_size`` (1 MiB)
    autobahn refuses a message at its header, before the application sees it,
    and closed with 1009; the protocol's code for a client frame too big (4009,
    realtime.protocol.close_codes, handed in by quikday.asgi: the server knows no
    protocol of the app's) is the one the application closes with over
    REALTIME_MAX_CLIENT_FRAME. Still at the header, nothing of it read; the
    close frame's reason says the limit. False when Daphne is not installed.
    """
    try:
        from daphne import ws_protocol
    except ImportError:
        return False
    if not upstream.usable("autobahn-message-too-big"):
        return False
    WebSocketProtocol = ws_protocol.WebSocketProtocol
    if getattr(WebSocketProtocol._max_message_size_exceeded, "realtime_tuned", False):
        return True

    def _max_message_size_exceeded(self, msg_size, max_msg_size, reason) -> None:
        self._fail_connection(code, f"a client frame is at most {max_msg_size} bytes")

    _max_message_size_exceeded.realtime_tuned = True
    WebSocketProtocol._max_message_size_exceeded = _max_message_size_exceeded
    return True


class LeanQueue:
    """What Daphne needs of an application's input queue, without asyncio.Queue's four deques.

    Daphne gives every connection an ``asyncio.Queue`` and only ever calls its
    ``put_nowait`` and (the application, as ASGI ``receive``) its ``get``. An
    ``asyncio.Queue`` allocates three deques and an Event (a fourth) up front,
    each with a block of its own: most of a KB apiece for every idle socket.
    Items and waiting getters are kept in lists here, in the same order.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list = []
        self._getters: list = []

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item) -> None:
        self._items.append(item)
        self._wake_next()

    def get_nowait(self):
        import asyncio

        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self):
        import asyncio

        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # a no-op if it was woken
                if getter in self._getters:
                    self._getters.remove(getter)
                elif self._items:  # woken, then cancelled: the item is another getter's
                    self._wake_next()
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


def lean_application_queues() -> bool:
    """Daphne's ``Server.create_application``, with a LeanQueue as each connection's input queue.

    A copy of daphne 4.2's method (its source pinned in server.upstream) in
    which only the queue's class differs. False outside a Daphne server
    (daphne.server not imported), or on a Daphne the copy was not read against.
    """
    import sys

    # Importing daphne.server installs Twisted's reactor: patch it only where Daphne already did.
    server = sys.modules.get("daphne.server")
    if server is None or not upstream.usable("daphne-application-queue"):
        return False
    Server = server.Server
    if getattr(Server.create_application, "realtime_tuned", False):
        return True

    def create_application(self, protocol, scope):
        import asyncio
        from functools import partial

        assert "application_instance" not in self.connections[protocol]
        input_queue = LeanQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope,
            receive=input_queue.get,
            send=partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance,
            loop=asyncio.get_event_loop(),
        )
        return input_queue

    create_application.realtime_tuned = True
    Server.create_application = create_application
    return True


def freeze_startup_heap() -> None:
    """Keep the objects loaded at start-up out of every later garbage collection.

    Django, DRF, Twisted and their modules are a few hundred thousand objects
    that live as long as the process; a full (generation 2) collection walks
    them all and pauses the event loop, which every frame in flight waits out
    (docs/benchmarks.md). ``gc.freeze()`` moves them to the permanent generation,
    which collections skip; objects created later are collected as before.
    """
    gc.collect()
    gc.freeze()


def apply(*, too_big_close_code: int) -> None:
    """Every tuning of this Daphne process; a client message over Daphne's limit closes with
    ``too_big_close_code``."""
    upstream.review()  # every unverified reach of this process logged once, used here or not
    wait_longer_for_close_replies()
    hand_control_frames_to_applications()
    close_too_big_messages_with(too_big_close_code)
    daphne_connect.skip_unlogged_option_dump()
    lean_application_queues()
    freeze_startup_heap()
