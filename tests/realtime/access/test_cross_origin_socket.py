"""CORS_ALLOWED_ORIGINS does not widen the WebSocket Origin check (realtime/access/auth.py).

An origin allowed to call the API with a token is not allowed this site's
cookies (CORS_ALLOW_CREDENTIALS is off); a cookie socket is exactly what the
Origin check guards, so a page there connects with a ticket, never the cookie.
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from runs import services
from tests.realtime.conftest import use_layer
from tests.realtime.support import WAIT, application, close_socket, receive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dispatched")]

APP = b"http://localhost:3000"  # a page's origin, allowed for CORS below
SERVER = b"localhost:8000"


@pytest.fixture
def memory_layer(settings):
    yield from use_layer("memory", settings)


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _handshake(run_id, origin: bytes, cookie: bytes) -> tuple[bool, dict | None]:
    ws = WebsocketCommunicator(
        application,
        f"/ws/runs/{run_id}/",
        headers=[(b"cookie", cookie), (b"origin", origin), (b"host", SERVER)],
    )
    try:
        connected, _ = await ws.connect(timeout=WAIT)
        return connected, (await receive(ws)) if connected else None
    finally:
        await close_socket(ws)


async def test_a_cookie_socket_from_a_cors_allowed_origin_is_still_refused(settings, memory_layer, user):
    settings.CORS_ALLOWED_ORIGINS = [APP.decode()]
    run = await sync_to_async(services.run_create)(owner=user, steps=[{"tool": "echo"}])
    cookie = await sync_to_async(_session_cookie)(user)

    connected, _ = await _handshake(run.id, APP, cookie)
    assert not connected

    # The same cookie from the server's own origin connects: the origin alone was refused.
    connected, frame = await _handshake(run.id, b"http://" + SERVER, cookie)
    assert connected and frame["type"] == "connected"
