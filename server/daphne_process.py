"""The web command's Daphne process: Daphne's own command line, with a server that stops gently.

On SIGTERM (a deploy, a restart, the platform moving the process) Daphne
cancels every connection's application and stops its reactor, which drops
every socket: a WebSocket client sees 1006, an abnormal closure, as if the
network had failed. Here the server first closes each open WebSocket with
**1012, service restart** (RFC 6455 §7.4.1's registry), waits up to
``CLOSE_WAIT_SECONDS`` for the clients' replies, and only then lets Daphne
cancel what is left. A client told 1012 knows it is a restart and reconnects,
spread out and resuming with ``?since=`` (docs/protocol.md, "Close codes").

Why not the consumer's ``close(code=1012)``: Daphne sends that through
autobahn's public ``sendClose``, which lets an application close only with
1000 or 3000-4999 and raises on anything else (1000-2999 are the protocol's
own codes, RFC 6455 §7.4.2). The server itself may use them: autobahn's
``sendCloseFrame`` (no such check) is what autobahn sends its own protocol
closes with (1002, 1007, 1009), and what Daphne sends 1011 with after an
application error. 1012 is in autobahn's list of codes a peer may send.

The wait stays well inside the platform's grace period (Heroku: 30 s between
SIGTERM and SIGKILL) and the web command's ``--stop-timeout`` (25 s).

Usage: ``python -m server.daphne_process <daphne's arguments>`` (the asyncio
loop) or ``python -m server.daphne_uvloop ...`` (uvloop: the web command's default).
"""

from __future__ import annotations

import logging
import time

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer, reactor

from server import upstream

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012
CLOSE_REASON = b"service restart"
# How long the clients have to answer the close before Daphne drops what is left.
CLOSE_WAIT_SECONDS = 10.0
_CHECK_EVERY = 0.05


class RestartingServer(Server):
    """Daphne's server; on shutdown, every open WebSocket is closed with 1012 first."""

    close_wait_seconds = CLOSE_WAIT_SECONDS

    def open_websockets(self) -> list[WebSocketProtocol]:
        return [
            protocol
            for protocol in self.connections
            if isinstance(protocol, WebSocketProtocol) and protocol.state == WebSocketProtocol.STATE_OPEN
        ]

    def kill_all_applications(self):
        """Close the open WebSockets with 1012, wait for them (or the deadline), then Daphne's own."""
        closing = self.open_websockets()
        for protocol in closing:
            protocol.sendCloseFrame(code=CLOSE_SERVICE_RESTART, reasonUtf8=CLOSE_REASON, isReply=False)
        logger.info("shutting down: closed %d WebSockets with 1012 (service restart)", len(closing))
        done = defer.Deferred()
        deadline = time.monotonic() + self.close_wait_seconds

        def check() -> None:
            waiting = [p for p in closing if p.state != WebSocketProtocol.STATE_CLOSED]
            if waiting and time.monotonic() < deadline:
                reactor.callLater(_CHECK_EVERY, check)
                return
            if waiting:
                logger.warning("%d WebSocket clients did not answer the close; dropping them", len(waiting))
            done.callback(None)

        check()
        done.addCallback(lambda _: Server.kill_all_applications(self))
        return done


def main() -> None:
    # What it relies on of Daphne and autobahn is registered in server.upstream; where that is
    # gone, Daphne's own server runs (its clients see 1006 on a restart, and still resume).
    if upstream.usable("daphne-graceful-restart") and upstream.usable("autobahn-server-close-frame"):
        CommandLineInterface.server_class = RestartingServer
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
