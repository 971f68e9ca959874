"""Every close code the server sends on a WebSocket (docs/protocol.md, "Close codes").

One table for both endpoints (/ws/runs/<id>/ and /ws/runs/). autobahn (under
Daphne) lets a server close only with 1000 or 3000-4999: it turned 1009 into
an exception and a 1011 close, hence 4009 for a frame that is too big — also
when autobahn itself refuses one past Daphne's limit (server.daphne_tuning).
"""

CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 4009
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RATE_LIMITED = 4429
