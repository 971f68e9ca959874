"""WebSocket authentication and origin checks (ASGI middleware).

Browsers authenticate with the session cookie (AuthMiddlewareStack); other
clients send ``Authorization: Token <key>`` (DRF's authtoken); pages on
another origin send ``?ticket=`` (realtime.access.tickets). A present Origin header
must name one of ALLOWED_HOSTS *and* be the origin the socket was opened on
(its host and port equal the handshake's Host), or be one of
CSRF_TRUSTED_ORIGINS: another site on the same host name but another port is
another origin (cross-site WebSocket hijacking). A missing Origin (non-browser
clients, which carry no ambient cookies to abuse) is allowed, and so is any
Origin with a ticket: a ticket is not an ambient credential (another site
cannot make a browser send one), and a handshake with a ticket never looks at
the cookie. CORS_ALLOWED_ORIGINS is not accepted here: those origins may call
the API with a token but are never allowed this site's cookies, and a socket
that reaches the Origin check is one that could authenticate by cookie.
"""

from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

from realtime.access import tickets
from runs.api.auth import is_well_formed_key


class _Refusal(WebsocketDenier):
    """Channels' WebsocketDenier without a channel layer: a refused handshake receives nothing.

    With one, it opens a channel on the layer first, and on the core layer that
    channel's pending receive (a blocking pop, five seconds) keeps the refused
    connection's task alive that long after the client has gone.
    """

    channel_layer_alias = None  # no such layer: get_channel_layer answers None


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _ticket(scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(tickets.QUERY_PARAMETER)
    return values[-1] if values else None


class TicketAuthMiddleware:
    """Consumes ``?ticket=`` (once, whatever happens next); its user, or anonymous (→ 4401).

    A ticket asked for with an API token puts that token's key in scope["auth_token"], as a
    token client's header does: the socket is re-checked against the token (a revoked token
    closes it with 4401), not only against its user.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        admitted = await database_sync_to_async(tickets.consume_ticket)(ticket=_ticket(scope))
        if admitted is None:
            scope = dict(scope, user=AnonymousUser(), auth_ticket=True)
        else:
            scope = dict(scope, user=admitted.user, auth_ticket=True, auth_token=admitted.token_key)
        return await self.app(scope, receive, send)


class TokenAuthMiddleware:
    """Notes an ``Authorization: Token <key>`` header's key in scope["auth_token"].

    The key is not looked up here: the consumer resolves it in the same
    database round trip as the run's snapshot (realtime.reads.selectors.connect_state),
    which halves the database work of a connect. Until then scope["user"] is
    anonymous; a header of another scheme, or a malformed key, stays anonymous.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = _header(scope, b"authorization")
        if raw is not None:
            scheme, _, key = raw.decode("latin-1").partition(" ")
            key = key.strip()
            token = key if scheme.lower() == "token" and is_well_formed_key(key) else None
            scope = dict(scope, user=AnonymousUser(), auth_token=token)
        return await self.app(scope, receive, send)


class RealtimeAuthMiddleware:
    """Ticket and token clients skip the session stack (and its database hop); browsers use it."""

    def __init__(self, app):
        self.ticket_app = TicketAuthMiddleware(app)
        self.token_app = TokenAuthMiddleware(app)
        self.session_app = AuthMiddlewareStack(app)

    async def __call__(self, scope, receive, send):
        if _ticket(scope) is not None:
            return await self.ticket_app(scope, receive, send)
        if _header(scope, b"authorization") is not None:
            return await self.token_app(scope, receive, send)
        return await self.session_app(scope, receive, send)


_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginCheckMiddleware:
    """Refuses a handshake whose Origin is not one of ALLOWED_HOSTS."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin")
            host = _header(scope, b"host")
            checked = origin is not None and _ticket(scope) is None
            if checked and not self.allowed(origin.decode("latin-1"), (host or b"").decode("latin-1")):
                return await _Refusal()(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def allowed(origin: str, host_header: str) -> bool:
        if origin in settings.CSRF_TRUSTED_ORIGINS:
            return True
        parsed = urlparse(origin)
        try:
            host, port = parsed.hostname, parsed.port
        except ValueError:  # a port that is not a number
            return False
        if not host or parsed.scheme not in _DEFAULT_PORTS:
            return False
        host = host if ":" not in host else f"[{host}]"  # an IPv6 literal, as Host writes it
        default_port = _DEFAULT_PORTS[parsed.scheme]
        socket_host, socket_port = split_domain_port(host_header)
        if (host, port or default_port) != (socket_host, int(socket_port or default_port)):
            return False  # another origin: same name and another port, or another name
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        return validate_host(host, hosts)
