"""Connection tickets (POST /api/ws-tickets/, ?ticket=): issued, used once, expiring; real Daphne."""

import asyncio
import json
import urllib.request
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.access import tickets
from realtime.models import ConnectionTicket
from runs import services

WAIT = 30.0
FOREIGN = "https://spa.example.com"  # a page on another origin


def test_a_ticket_is_stored_hashed_used_once_and_expires(db, user):
    ticket, expires_at = tickets.issue_ticket(user=user)
    assert len(ticket) == tickets.TICKET_LENGTH
    assert 55 <= (expires_at - timezone.now()).total_seconds() <= 60
    assert not ConnectionTicket.objects.filter(key_hash=ticket).exists()  # only its hash is kept
    assert tickets.consume_ticket(ticket=ticket) == (user, None)  # a session's: no token
    assert tickets.consume_ticket(ticket=ticket) is None
    old, _ = tickets.issue_ticket(user=user)
    ConnectionTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tickets.consume_ticket(ticket=old) is None
    assert ConnectionTicket.objects.count() == 0  # consumed even when expired
    assert tickets.consume_ticket(ticket="x" * 500) is None
    assert tickets.consume_ticket(ticket="\x00" * tickets.TICKET_LENGTH) is None


def test_a_ticket_is_refused_from_the_instant_it_expires(db, user, monkeypatch):
    # As issuing prunes it (expires_at <= now): expires_at is the first instant it is no good.
    ticket, expires_at = tickets.issue_ticket(user=user)
    monkeypatch.setattr(tickets.timezone, "now", lambda: expires_at)
    assert tickets.consume_ticket(ticket=ticket) is None


def test_what_cannot_be_a_ticket_is_refused_without_a_database_round_trip(db, django_assert_num_queries):
    # A flood of made-up tickets costs the database nothing: only 43 ASCII characters can be one.
    with django_assert_num_queries(0):
        assert tickets.consume_ticket(ticket="x" * 500) is None
        assert tickets.consume_ticket(ticket="x" * (tickets.TICKET_LENGTH - 1)) is None
        assert tickets.consume_ticket(ticket="é" * tickets.TICKET_LENGTH) is None


def test_issuing_prunes_expired_tickets(db, user):
    tickets.issue_ticket(user=user)
    ConnectionTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    tickets.issue_ticket(user=user)
    assert ConnectionTicket.objects.count() == 1


def test_an_inactive_users_ticket_is_refused(db, user):
    ticket, _ = tickets.issue_ticket(user=user)
    user.is_active = False
    user.save()
    assert tickets.consume_ticket(ticket=ticket) is None


def test_a_ticket_asked_for_with_a_token_stands_for_that_token(db, user):
    token = Token.objects.create(user=user).key
    ticket, _ = tickets.issue_ticket(user=user, token_key=token)
    assert ConnectionTicket.objects.get().token_hash not in ("", token)  # stored hashed
    assert tickets.consume_ticket(ticket=ticket) == (user, token)
    # Deleted or rotated between the ticket and the handshake: the ticket is void.
    for rotate in (False, True):
        ticket, _ = tickets.issue_ticket(user=user, token_key=token)
        Token.objects.filter(key=token).delete()
        if rotate:
            token = Token.objects.create(user=user).key
        assert tickets.consume_ticket(ticket=ticket) is None


def test_the_ticket_api_notes_the_token_that_asked_and_not_a_session(db, token, user):
    assert Client().post("/api/ws-tickets/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 201
    assert ConnectionTicket.objects.get().token_hash != ""
    ConnectionTicket.objects.all().delete()
    browser = Client()
    browser.force_login(user)
    assert browser.post("/api/ws-tickets/").status_code == 201
    assert ConnectionTicket.objects.get().token_hash == ""


def test_ticket_api_needs_auth_and_answers_201(db, api, client):
    response = api.post("/api/ws-tickets/")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_at"} and len(body["ticket"]) == tickets.TICKET_LENGTH
    anonymous = client.post("/api/ws-tickets/")
    assert anonymous.status_code == 401
    assert "error" in anonymous.json() or "detail" in anonymous.json()


def _post_ticket(server, token: str) -> str:
    request = urllib.request.Request(
        f"{server.url}/api/ws-tickets/", headers={"Authorization": f"Token {token}"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        assert response.status == 201
        return json.loads(response.read())["ticket"]


async def _first_frames(url: str, origin: str | None = None, cookie: str | None = None) -> tuple[list, int]:
    headers = {"Cookie": cookie} if cookie else {}
    frames = []
    async with connect(url, origin=origin, additional_headers=headers, open_timeout=WAIT) as ws:
        try:
            async with asyncio.timeout(WAIT):
                async for message in ws:
                    frames.append(json.loads(message))
                    if frames[-1]["type"] == "connected":
                        break
        except ConnectionClosed:
            pass
        await ws.close()
        return frames, ws.close_code


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
def test_tickets_through_daphne_from_another_origin(daphne_process, user, other_user, staff_user):
    server = daphne_process
    token = Token.objects.create(user=user).key
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    url = f"{server.ws_url}/ws/runs/{run.id}/"

    async def scenario():
        # A ticket opens the socket from another origin, once.
        ticket = await asyncio.to_thread(_post_ticket, server, token)
        frames, _ = await _first_frames(f"{url}?ticket={ticket}", origin=FOREIGN)
        assert frames[0]["type"] == "connected" and frames[0]["payload"]["run"]["id"] == str(run.id)
        frames, code = await _first_frames(f"{url}?ticket={ticket}", origin=FOREIGN)
        assert code == 4401 and frames[0]["payload"] == {"code": "4401", "message": "not authenticated"}
        # Two handshakes racing with one ticket: exactly one wins.
        ticket = await asyncio.to_thread(_post_ticket, server, token)
        results = await asyncio.gather(
            _first_frames(f"{url}?ticket={ticket}", origin=FOREIGN),
            _first_frames(f"{url}?ticket={ticket}", origin=FOREIGN),
        )
        assert sorted(frames[0]["type"] for frames, _ in results) == ["connected", "error"]
        # A made-up ticket is not a credential.
        frames, code = await _first_frames(f"{url}?ticket={'a' * tickets.TICKET_LENGTH}", origin=FOREIGN)
        assert code == 4401
        # The list stream takes tickets too.
        ticket = await asyncio.to_thread(_post_ticket, server, token)
        frames, _ = await _first_frames(f"{server.ws_url}/ws/runs/?ticket={ticket}", origin=FOREIGN)
        assert frames[0]["type"] == "connected"
        assert [r["id"] for r in frames[0]["payload"]["runs"]] == [str(run.id)]

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
def test_cookie_sockets_keep_the_origin_check(daphne_process, user):
    server = daphne_process
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    url = f"{server.ws_url}/ws/runs/{run.id}/"

    async def scenario():
        frames, _ = await _first_frames(url, origin=server.url, cookie=cookie)
        assert frames[0]["type"] == "connected"
        with pytest.raises(InvalidStatus) as refused:
            await _first_frames(url, origin=FOREIGN, cookie=cookie)
        assert refused.value.response.status_code == 403
        # A ticket parameter never falls back to the cookie: a bad ticket with a good cookie is 4401.
        frames, code = await _first_frames(f"{url}?ticket=nope", origin=FOREIGN, cookie=cookie)
        assert code == 4401

    asyncio.run(scenario())
