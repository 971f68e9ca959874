"""WebSocket authentication and origin checks (ASGI middleware).

Browsers authenticate with the session cookie (AuthMiddlewareStack); other
clients send ``Authorization: Token <key>`` (DRF's authtoken). A present
Origin header must name one of ALLOWED_HOSTS; a missing one (non-browser
clients, which carry no ambient cookies to abuse) is allowed.
"""

from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host

from runs.api.auth import is_well_formed_key


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    if not is_well_formed_key(key):
        return AnonymousUser()  # a NUL would reach PostgreSQL as an error, not a miss
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware:
    """Sets scope["user"] from an ``Authorization: Token <key>`` header, when sent."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = _header(scope, b"authorization")
        if raw is not None:
            scheme, _, key = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "token" and key.strip():
                scope = dict(scope, user=await _user_for_token(key.strip()))
            else:
                scope = dict(scope, user=AnonymousUser())
        return await self.app(scope, receive, send)


class OriginCheckMiddleware:
    """Refuses a handshake whose Origin is not one of ALLOWED_HOSTS."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            origin = _header(scope, b"origin")
            if origin is not None and not self.allowed(origin.decode("latin-1")):
                return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def allowed(origin: str) -> bool:
        host = urlparse(origin).hostname
        if not host:
            return False
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        return validate_host(host if ":" not in host else f"[{host}]", hosts)
