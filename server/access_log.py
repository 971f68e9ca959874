"""Daphne's access log through Python logging, so it is redacted and follows LOG_FORMAT.

Daphne writes its NCSA-style access lines straight to stdout, outside
``LOGGING``: an HTTP line carries the whole URI, query string included, so a
``?token=`` or ``?ticket=`` a client put there would reach the log as is, and
with LOG_FORMAT=json the drain would get lines that are not JSON. The web
process's start-up (quikday.asgi) reroutes each entry to the ``daphne.access``
logger; the stream Daphne was given is not used any more.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("daphne.access")


def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None) -> None:
    """AccessLogGenerator.write_entry's signature; one INFO line, its parts as fields."""
    logger.info(
        '%s "%s" %s %s',
        host,
        request,
        status or "-",
        length or "-",
        extra={"event": "access", "client": host, "request": request, "status": status, "size": length},
    )


def route_through_logging() -> bool:
    """False when Daphne's access log is not the one this was read against (server.upstream)."""
    from server import upstream

    if not upstream.usable("daphne-access-log"):
        return False
    from daphne.access import AccessLogGenerator

    AccessLogGenerator.write_entry = write_entry
    return True
