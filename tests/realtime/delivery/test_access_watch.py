"""The process's access watch: one read per period re-checks every open socket's credentials.

(Both endpoints through a real Daphne, with the watch ticking on its own:
tests/scenarios/test_protocol_daphne.py::test_revoked_credentials_close_an_open_socket_4401.)
"""

import asyncio
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from realtime.delivery.access_watch import AccessWatch, Credentials, get_access_watch
from realtime.protocol.close_codes import CLOSE_UNAUTHENTICATED
from realtime.reads import selectors
from runs import services
from tests.realtime.support import (
    WAIT,
    close_socket,
    open_socket,
    receive,
    receive_close,
    statements_counted,
    token_headers,
)

pytestmark = pytest.mark.django_db(transaction=True)

REVOKED_FRAME = {"code": "4401", "message": "the credentials were revoked"}


@pytest.fixture
def poll_mode(settings):
    """Run sockets without a channel layer; the poller's reads are told apart from the watch's."""
    settings.REALTIME_MODE = "poll"
    settings.REALTIME_POLL_INTERVAL = 0.05
    return settings


@pytest.fixture
def watch_reads(monkeypatch):
    """Every read the access watch makes: (the credentials asked about, the SQL statements it took)."""
    made = []
    original = selectors.revoked_credentials

    def counted(**credentials):
        revoked, statements = statements_counted(original)(**credentials)
        made.append(({k: set(v) for k, v in credentials.items()}, statements))
        return revoked

    monkeypatch.setattr(selectors, "revoked_credentials", counted)
    return made


def _session_cookie(user) -> tuple[list[tuple[bytes, bytes]], str]:
    """A browser's cookie header for a fresh session of ``user``, and that session's key."""
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    return [(b"cookie", f"sessionid={key}".encode())], key


make_run = sync_to_async(lambda owner: services.run_create(owner=owner, steps=[{"tool": "echo"}]))
new_token = sync_to_async(lambda user: Token.objects.get_or_create(user=user)[0].key)
session_cookie = sync_to_async(_session_cookie)


async def _pong(ws) -> None:
    await ws.send_to(text_data='{"type": "ping"}')
    assert (await receive(ws))["type"] == "pong"


async def _revoked(ws) -> None:
    frame = await receive(ws)
    assert (frame["type"], frame["payload"]) == ("error", REVOKED_FRAME)
    assert await receive_close(ws) == CLOSE_UNAUTHENTICATED


# --- The selector ----------------------------------------------------------------------


def test_revoked_credentials_names_what_no_longer_holds(user, other_user, django_user_model):
    carol = django_user_model.objects.create_user(username="carol", password="pw-carol-123")
    live, of_inactive = Token.objects.create(user=user).key, Token.objects.create(user=other_user).key
    type(other_user).objects.filter(pk=other_user.pk).update(is_active=False)
    deleted_user = django_user_model.objects.create_user(username="dave", password="pw-dave-123")
    deleted_id = deleted_user.pk
    deleted_user.delete()
    sessions = {}
    for name, expires in [("live", timedelta(hours=1)), ("expired", -timedelta(seconds=1))]:
        sessions[name] = "x" * 31 + name[0]
        Session.objects.create(
            session_key=sessions[name], session_data="", expire_date=timezone.now() + expires
        )

    with CaptureQueriesContext(connection) as captured:
        revoked = selectors.revoked_credentials(
            token_keys={live, of_inactive, "0" * 40},
            user_ids={user.pk, other_user.pk, carol.pk, deleted_id},
            session_keys={sessions["live"], sessions["expired"], "y" * 32},
        )
    assert revoked == selectors.Revoked(
        token_keys=frozenset({of_inactive, "0" * 40}),
        user_ids=frozenset({other_user.pk, deleted_id}),
        session_keys=frozenset({sessions["expired"], "y" * 32}),
    )
    assert len(captured.captured_queries) == 3  # one per kind, whatever the count of each

    with CaptureQueriesContext(connection) as captured:
        nothing = selectors.revoked_credentials(token_keys=set(), user_ids=set(), session_keys=set())
    assert nothing == selectors.Revoked(frozenset(), frozenset(), frozenset())
    assert captured.captured_queries == []


def test_credentials_are_asked_about_10_000_to_a_statement():
    # A statement's parameters are bounded (65,535 in PostgreSQL's protocol): a
    # process with more open sockets than that asks in several statements.
    for asked, statements in [(10_000, 1), (10_001, 2)]:
        with CaptureQueriesContext(connection) as captured:
            revoked = selectors.revoked_credentials(
                token_keys=set(), user_ids=set(range(1, asked + 1)), session_keys=set()
            )
        assert len(revoked.user_ids) == asked  # no such users
        assert len(captured.captured_queries) == statements


def test_which_credentials_a_revocation_reaches():
    revoked = selectors.Revoked(frozenset({"t1"}), frozenset({7}), frozenset({"s1"}))
    assert Credentials(token_key="t1").revoked_in(revoked)
    assert not Credentials(token_key="t2").revoked_in(revoked)
    # A browser's socket: its user deactivated, or its session ended.
    assert Credentials(user_id=7, session_key="s2").revoked_in(revoked)
    assert Credentials(user_id=8, session_key="s1").revoked_in(revoked)
    assert not Credentials(user_id=8, session_key="s2").revoked_in(revoked)
    assert not Credentials(user_id=8).revoked_in(revoked)  # a ticket's socket: no session
    assert Credentials().revoked_in(revoked)


# --- The watch -------------------------------------------------------------------------


@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_n_sockets_of_m_users_cost_one_read_per_tick(settings, user, other_user, watch_reads, db_reads):
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 3600  # this test ticks the watch itself
    sockets, expected = [], {"token_keys": set(), "user_ids": set(), "session_keys": set()}
    try:
        for owner in (user, other_user):
            run = await make_run(owner)
            token = await new_token(owner)
            cookie, session_key = await session_cookie(owner)
            expected["token_keys"].add(token)
            expected["user_ids"].add(owner.pk)
            expected["session_keys"].add(session_key)
            for headers in [token_headers(token)] * 3 + [cookie] * 3:
                ws, connected = await open_socket(run.id, headers=headers)
                sockets.append(ws)
                assert connected["type"] == "connected"
        watch = get_access_watch()
        assert len(watch.sockets) == 12 and watch.running

        db_reads.clear()
        await watch.tick()
        await watch.tick()
        # The poller's ticks go on meanwhile (poll mode): its reads are not the watch's.
        reads = [read.fn for read in db_reads if read.fn is not selectors.events_after_cursors]
        assert reads == [selectors.revoked_credentials] * 2
        # Each read asked about every socket's credentials at once, one statement per kind.
        assert watch_reads == [(expected, 3)] * 2
        for ws in sockets:
            await _pong(ws)  # nothing was revoked: every socket is still served
    finally:
        for ws in sockets:
            await close_socket(ws)


@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_a_revocation_closes_only_the_sockets_it_reaches(settings, user, other_user):
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 0.1  # the watch ticks on its own
    sockets = []
    try:
        alice_token, bob_token = await new_token(user), await new_token(other_user)
        cookie, alice_session = await session_cookie(user)
        alice_run, bob_run = await make_run(user), await make_run(other_user)
        for run, headers in [
            (alice_run, token_headers(alice_token)),
            (alice_run, cookie),
            (bob_run, token_headers(bob_token)),
        ]:
            ws, connected = await open_socket(run.id, headers=headers)
            sockets.append(ws)
            assert connected["type"] == "connected"
        by_token, by_session, bobs = sockets

        await sync_to_async(Token.objects.filter(key=alice_token).delete)()
        await _revoked(by_token)
        await _pong(by_session)  # the same user's browser still holds its session
        await _pong(bobs)

        await sync_to_async(Session.objects.filter(session_key=alice_session).delete)()
        await _revoked(by_session)
        await _pong(bobs)

        await sync_to_async(type(other_user).objects.filter(pk=other_user.pk).update)(is_active=False)
        await _revoked(bobs)
    finally:
        for ws in sockets:
            await close_socket(ws)


@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_the_watch_starts_with_the_first_socket_and_stops_with_the_last(settings, user, token):
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 3600  # it must stop at once, not at its next tick
    watch = get_access_watch()
    assert not watch.running
    run = await make_run(user)
    first, _ = await open_socket(run.id, headers=token_headers(token))
    second = None
    try:
        second, _ = await open_socket(run.id, headers=token_headers(token))
        task = watch._task
        assert watch.running and len(watch.sockets) == 2
        await close_socket(first)
        assert watch.running and len(watch.sockets) == 1
        await close_socket(second)
        assert watch.sockets == {}
        await asyncio.wait_for(task, WAIT)  # ended: no read while no socket is open
        assert not watch.running

        third, _ = await open_socket(run.id, headers=token_headers(token))  # and starts again
        try:
            assert watch.running and len(watch.sockets) == 1
        finally:
            await close_socket(third)
    finally:
        await close_socket(first)
        if second is not None:
            await close_socket(second)


@pytest.mark.usefixtures("dispatched", "poll_mode")
async def test_a_failing_read_is_reported_once_and_tried_again_next_tick(
    settings, monkeypatch, caplog, user, token
):
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 3600  # this test ticks the watch itself
    original = selectors.revoked_credentials
    database = {"away": True}

    def flaky(**credentials):
        if database["away"]:
            raise OperationalError("the database is away")
        return original(**credentials)

    monkeypatch.setattr(selectors, "revoked_credentials", flaky)
    run = await make_run(user)
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    try:
        await sync_to_async(Token.objects.filter(key=token).delete)()
        watch = get_access_watch()
        with caplog.at_level(logging.DEBUG, logger="realtime.delivery.access_watch"):
            await watch.tick()
            await watch.tick()
            assert len(watch.sockets) == 1  # nothing decided without an answer
            database["away"] = False
            await watch.tick()
        await _revoked(ws)
        levels = [r.levelno for r in caplog.records if r.name == "realtime.delivery.access_watch"]
        assert levels == [logging.WARNING, logging.DEBUG, logging.INFO]
    finally:
        await close_socket(ws)


async def test_after_a_tick_the_next_is_a_period_later(settings):
    """Kills access_watch.py:95 ``self._due + REALTIME_ACCESS_RECHECK_SECONDS`` → ``-``: the next tick
    due at once, a read at every pass of the loop instead of one per period."""
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 3600
    loop = asyncio.get_running_loop()
    watch = AccessWatch(loop)
    watch._due = loop.time()
    await watch.tick()  # no socket watched: no read, only the next due time
    assert watch._due >= loop.time() + 3599


class _Holder:
    def __init__(self):
        self.told = 0

    async def on_revoked(self) -> None:
        self.told += 1


class _BrokenHolder(_Holder):
    async def on_revoked(self) -> None:
        raise ConnectionResetError("the socket went away mid-close")


async def test_a_socket_that_fails_to_close_keeps_no_other_open(settings, caplog):
    """Kills access_watch.py:125 ``except Exception`` → another exception (the tick raises, the other
    socket may stay open) and :127 ``exc_info=True`` → ``False`` (the warning loses its traceback)."""
    settings.REALTIME_ACCESS_RECHECK_SECONDS = 3600  # this test ticks the watch itself
    watch = get_access_watch()
    broken, holder = _BrokenHolder(), _Holder()
    try:
        watch.watch(broken, Credentials())  # nothing lets these in any more
        watch.watch(holder, Credentials())
        with caplog.at_level(logging.WARNING, logger="realtime.delivery.access_watch"):
            await watch.tick()
    finally:
        watch.unwatch(broken)
        watch.unwatch(holder)
    assert holder.told == 1
    assert "ConnectionResetError: the socket went away mid-close" in caplog.text
