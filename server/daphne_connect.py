"""A Daphne connection's start without autobahn's option dump for a debug line that is off.

autobahn's ``WebSocketProtocol._connectionMade`` copies its ~40 options from the
factory onto each connection and formats all of them with ``pprint.pformat`` for
a ``log.debug`` line, whatever the log level: an eighth of the web process's
event loop in a connect storm (py-spy; docs/benchmarks.md, "Where Daphne's
connect goes"). For the duration of that call the module's ``pformat`` hands its
argument back unformatted: the options are copied as before, and a debug log
that is on renders the same list on one line instead of pretty-printed.
"""

from __future__ import annotations

from typing import Any

from server import upstream


def _unformatted(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value


def skip_unlogged_option_dump() -> bool:
    """Wrap autobahn's ``WebSocketProtocol._connectionMade`` (see above). False without autobahn,
    or on a release the wrapper was not read against (autobahn's own method runs)."""
    try:
        from autobahn.websocket import protocol
    except ImportError:
        return False
    if not upstream.usable("autobahn-connect-option-dump"):
        return False
    WebSocketProtocol = protocol.WebSocketProtocol
    if getattr(WebSocketProtocol._connectionMade, "realtime_tuned", False):
        return True
    original = WebSocketProtocol._connectionMade

    def _connectionMade(self) -> None:
        formatter = protocol.pformat
        protocol.pformat = _unformatted  # the reactor's thread only: no other call sees it
        try:
            original(self)
        finally:
            protocol.pformat = formatter

    _connectionMade.realtime_tuned = True
    WebSocketProtocol._connectionMade = _connectionMade
    return True
