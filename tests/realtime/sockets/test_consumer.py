"""The socket's edges: close codes, authentication, Origin, and client frames."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token

from realtime.access import tickets
from realtime.reads import selectors
from runs import executor, services
from tests.realtime.support import (
    WAIT,
    application,
    close_socket,
    open_socket,
    receive,
    receive_close,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("layer", "realtime_mode", "dispatched"),
]

make_run = sync_to_async(lambda owner, n=1: services.run_create(owner=owner, steps=[{"tool": "echo"}] * n))


@pytest.fixture
async def track():
    """``track(ws)``: a socket the test opened, closed after the test whatever it asserted."""
    opened: list[WebsocketCommunicator] = []

    def track(ws: WebsocketCommunicator) -> WebsocketCommunicator:
        opened.append(ws)
        return ws

    yield track
    for ws in opened:
        await close_socket(ws)


async def _refused(track, path: str, headers, code: int) -> dict:
    """Accepted, then an error frame saying why, then closed with ``code``."""
    ws = track(WebsocketCommunicator(application, path, headers=headers))
    connected, _ = await ws.connect(timeout=WAIT)
    assert connected
    frame = await receive(ws)
    assert frame["type"] == "error"
    assert frame["payload"]["code"] == str(code)
    assert frame["payload"]["message"]
    assert frame["seq"] == 0  # nothing was sent before it
    assert await receive_close(ws) == code
    return frame


# --- Close codes -----------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g"])
async def test_4400_malformed_run_id(track, token, run_id):
    frame = await _refused(track, f"/ws/runs/{run_id}/", token_headers(token), 4400)
    assert frame["run_id"] == ""


@pytest.mark.parametrize(
    "headers",
    [
        [],
        token_headers("no-such-token"),
        [(b"authorization", b"Token ")],
        [(b"authorization", b"Bearer abc")],
        [(b"cookie", b"sessionid=forged")],
        [(b"authorization", b"Token abc\x00def")],
    ],
    ids=["nothing", "bad-token", "empty-token", "other-scheme", "bad-session", "nul-in-token"],
)
async def test_4401_not_authenticated(track, user, headers):
    run = await make_run(user)
    await _refused(track, f"/ws/runs/{run.id}/", headers, 4401)


async def test_4401_token_of_an_inactive_user(track, user, token):
    run = await make_run(user)
    user.is_active = False
    await sync_to_async(user.save)(update_fields=["is_active"])
    await _refused(track, f"/ws/runs/{run.id}/", token_headers(token), 4401)


async def test_4403_someone_elses_run(track, user, other_user):
    run = await make_run(user)
    other_token = await sync_to_async(Token.objects.create)(user=other_user)
    await _refused(track, f"/ws/runs/{run.id}/", token_headers(other_token.key), 4403)


async def test_4404_unknown_run(track, token):
    await _refused(track, "/ws/runs/5b8a3d3e-8d8c-4f43-9b8e-2b0c7e9f2a11/", token_headers(token), 4404)


async def test_staff_may_watch_any_run(track, user, staff_user):
    run = await make_run(user)
    staff_token = await sync_to_async(Token.objects.create)(user=staff_user)
    ws, frame = await open_socket(run.id, headers=token_headers(staff_token.key))
    track(ws)
    assert frame["type"] == "connected"
    assert frame["payload"]["run"]["owner"] == "alice"


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_session_cookie_authenticates(track, user):
    run = await make_run(user)
    cookie = await sync_to_async(_session_cookie)(user)
    ws, frame = await open_socket(
        run.id,
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
    )
    track(ws)
    assert frame["type"] == "connected" and frame["payload"]["run"]["id"] == str(run.id)


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"null",
        b"http://localhost.evil.example",
        # Issue 11 #10: the same host name on another port is another origin; it passed.
        b"http://localhost:9999",
        b"http://localhost",
        b"http://localhost:abc",
    ],
)
async def test_an_origin_not_in_allowed_hosts_is_refused(track, user, origin):
    run = await make_run(user)
    cookie = await sync_to_async(_session_cookie)(user)
    ws = track(
        WebsocketCommunicator(
            application,
            f"/ws/runs/{run.id}/",
            headers=[(b"cookie", cookie), (b"origin", origin), (b"host", b"localhost:8000")],
        )
    )
    connected, _ = await ws.connect(timeout=WAIT)
    assert not connected


async def test_a_ticket_opens_a_socket_from_another_origin_once(track, user):
    run = await make_run(user)
    ticket, _ = await sync_to_async(tickets.issue_ticket)(user=user)
    foreign = [(b"origin", b"https://spa.example.com"), (b"host", b"localhost:8000")]
    # A repeated ?ticket= counts its last value, as request.GET does.
    ws, frame = await open_socket(run.id, headers=foreign, query=f"ticket=nope&ticket={ticket}")
    track(ws)
    assert frame["type"] == "connected" and frame["payload"]["run"]["id"] == str(run.id)
    await _refused(track, f"/ws/runs/{run.id}/?ticket={ticket}", foreign, 4401)  # used up


async def test_a_finished_run_sends_connected_then_closes_1000(track, user, token):
    run = await make_run(user, 2)
    await sync_to_async(executor.execute_run)(run_id=run.id)
    ws, frame = await open_socket(run.id, headers=token_headers(token))
    track(ws)
    assert frame["type"] == "connected"
    assert frame["seq"] == 6
    assert frame["payload"]["run"]["status"] == "succeeded"
    assert await receive_close(ws) == 1000


# --- Client frames ---------------------------------------------------------------


@pytest.fixture
async def socket(user, token):
    run = await make_run(user)
    ws, frame = await open_socket(run.id, headers=token_headers(token))
    try:
        assert frame["type"] == "connected"
        yield ws
    finally:
        await close_socket(ws)


async def _ping_pong(ws) -> None:
    await ws.send_to(text_data='{"type": "ping"}')
    frame = await receive(ws)
    assert (frame["type"], frame["payload"], frame["seq"]) == ("pong", {}, 0)


async def test_ping_gets_pong(socket):
    await _ping_pong(socket)
    await _ping_pong(socket)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('"ping"', "malformed"),
        ("null", "malformed"),
        ('{"kind": "ping"}', "malformed"),
        ('{"type": 7}', "malformed"),
        ('{"type": "subscribe"}', "unknown_type"),
        ("x" * (64 * 1024), "malformed"),  # exactly the limit: answered, not closed
    ],
    ids=["bad-json", "array", "string", "null", "no-type", "type-not-string", "unknown", "at-limit"],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(socket, text, code):
    await socket.send_to(text_data=text)
    frame = await receive(socket)
    assert frame["type"] == "error"
    assert frame["payload"]["code"] == code and frame["payload"]["message"]
    await _ping_pong(socket)


async def test_a_binary_frame_gets_an_error(socket):
    await socket.send_to(bytes_data=b'{"type": "ping"}')
    frame = await receive(socket)
    assert (frame["type"], frame["payload"]["code"]) == ("error", "binary_not_supported")
    await _ping_pong(socket)


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_a_frame_over_64_kib_closes_4009_after_an_error_frame(socket, kind):
    big = "x" * (64 * 1024 + 1)
    if kind == "text":
        await socket.send_to(text_data=big)
    else:
        await socket.send_to(bytes_data=big.encode())
    frame = await receive(socket)
    assert (frame["type"], frame["payload"]["code"]) == ("error", "4009")
    assert await receive_close(socket) == 4009


async def test_deeply_nested_json_is_an_error_frame_and_the_socket_stays_open(socket):
    await socket.send_to(text_data="[" * 5000)
    frame = await receive(socket)
    assert (frame["type"], frame["payload"]["code"]) == ("error", "malformed")
    await _ping_pong(socket)


async def test_a_session_sockets_credentials_still_hold_at_its_recheck(track, user, settings, monkeypatch):
    """A cookie socket is re-checked by its user and its session, and both still hold.

    (Killed socket.py's ``"user_id": None if token_key is not None`` → ``is None``
    when each socket re-checked itself; the process's access watch now asks for
    every socket at once: the cookie socket's user and session are asked about,
    found valid, and the socket stays open.)
    """
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 0.05
    loop, rechecked, asked, answers = asyncio.get_running_loop(), asyncio.Event(), [], []
    real_check = selectors.revoked_credentials

    def noted_check(**kwargs):
        asked.append(kwargs)
        answers.append(real_check(**kwargs))
        loop.call_soon_threadsafe(rechecked.set)  # named point: a re-check has answered
        return answers[-1]

    monkeypatch.setattr(selectors, "revoked_credentials", noted_check)
    run = await make_run(user)
    cookie = await sync_to_async(_session_cookie)(user)
    ws, frame = await open_socket(
        run.id,
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
    )
    track(ws)
    assert frame["type"] == "connected"
    await asyncio.wait_for(rechecked.wait(), WAIT)
    assert asked[0]["user_ids"] == {user.pk} and len(asked[0]["session_keys"]) == 1
    assert answers[0] == selectors.Revoked(frozenset(), frozenset(), frozenset())
    await ws.send_to(text_data='{"type": "ping"}')
    assert (await receive(ws))["type"] == "pong"


async def test_a_slow_client_counts_as_drained_below_a_quarter_of_the_buffer(settings, monkeypatch):
    """Kills socket.py's resync low-water mark ``REALTIME_MAX_CLIENT_BUFFER // 4`` → ``// 5``.

    A client that fell behind is resynced once it has read "most" of what it was
    sent (docs/protocol.md, "Resync"): all but a quarter of REALTIME_MAX_CLIENT_BUFFER.
    What Daphne still holds for it is a stand-in here: just under a quarter, above a fifth.
    """
    from realtime.sockets.socket import ProtocolSocket
    from server import daphne_tuning

    settings.REALTIME_MAX_CLIENT_BUFFER = 1000 * 1024
    monkeypatch.setattr(daphne_tuning, "unsent_bytes", lambda send: 250 * 1024 - 1)
    socket = ProtocolSocket()
    socket.base_send = None
    await asyncio.wait_for(socket.wait_until_drained(), WAIT)


async def test_a_slow_clients_drain_is_looked_at_with_a_pause_between_looks(settings, monkeypatch):
    """Kills socket.py's ``RESYNC_CHECK_SECONDS = 0.2`` → ``-0.8`` (the drain watched in a busy loop).

    While the client stays behind, the socket looks at what Daphne still holds
    for it every so often, yielding the event loop in between. The waits are
    recorded (a stand-in sleep), not waited for.
    """
    from types import SimpleNamespace

    from realtime.sockets import socket as socket_module
    from server import daphne_tuning

    settings.REALTIME_MAX_CLIENT_BUFFER = 1000 * 1024
    held = iter([900 * 1024, 600 * 1024, 100 * 1024])  # behind, behind, drained
    monkeypatch.setattr(daphne_tuning, "unsent_bytes", lambda send: next(held))
    pauses = []

    async def noted_sleep(seconds):
        pauses.append(seconds)

    monkeypatch.setattr(socket_module, "asyncio", SimpleNamespace(sleep=noted_sleep))
    socket = socket_module.ProtocolSocket()
    socket.base_send = None
    await socket.wait_until_drained()
    assert len(pauses) == 2 and all(pause > 0 for pause in pauses), pauses


def test_a_client_is_behind_only_past_its_buffer(settings, monkeypatch):
    """Kills socket.py's ``unsent > REALTIME_MAX_CLIENT_BUFFER`` → ``>=``.

    docs/protocol.md, "Resync": a client is behind when it leaves *more than*
    REALTIME_MAX_CLIENT_BUFFER bytes unread. What Daphne holds is a stand-in.
    """
    from realtime.sockets.socket import ProtocolSocket
    from server import daphne_tuning

    settings.REALTIME_MAX_CLIENT_BUFFER = 1000 * 1024
    socket = ProtocolSocket()
    socket.base_send = None
    behind = {}
    for unsent in (None, 1000 * 1024, 1000 * 1024 + 1):
        monkeypatch.setattr(daphne_tuning, "unsent_bytes", lambda send, unsent=unsent: unsent)
        behind[unsent] = socket.client_behind()
    assert behind == {None: False, 1000 * 1024: False, 1000 * 1024 + 1: True}
