"""The user-level stream /ws/runs/ through a real Daphne: snapshot, exact run_summary frames, access.

The test process changes runs through the services (as a worker would); each
change's summary is published after commit through Redis to the Daphne
process, whose consumer relays it. One change at a time, each frame awaited:
the frames are exact.
"""

import asyncio
import json
import logging
import uuid

import pytest
from django.db import OperationalError, connections, transaction
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.reads import summaries
from realtime.runlist import list_feed
from runs import services
from tests.processes import daphne_server, subprocess_env
from tests.realtime.own_redis import OwnRedis
from tests.realtime.support import TS
from tests.scenarios.test_protocol_daphne import (
    PINGS,
    _cpu_idle,
    _masked_ping,
    _raw_socket,
    assert_clean_log,
    ping_pong,
)
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 30.0
ECHO2 = [{"tool": "echo", "args": {"n": 0}}, {"tool": "echo", "args": {"n": 1}}]


def test_a_runs_summary_goes_out_once_per_transaction_after_it_commits(monkeypatch):
    # A cancel that skips five steps moves the list's line once, not six times.
    published = []
    monkeypatch.setattr(list_feed, "publish_summary", lambda *, run_id: published.append(run_id))
    a, b = uuid.uuid4(), uuid.uuid4()
    with transaction.atomic():
        for run_id in (a, a, b, a):
            list_feed.note_change(run_id=run_id)
        assert published == []
    assert published == [str(a), str(b)]


def test_a_summary_that_cannot_be_read_is_logged_and_not_published(monkeypatch, caplog):
    def unreadable(*, run_id):
        raise OperationalError("the database went away")

    monkeypatch.setattr(list_feed.summaries, "run_summary", unreadable)
    with caplog.at_level(logging.WARNING, logger="realtime.runlist.list_feed"):
        assert list_feed.publish_summary(run_id=str(uuid.uuid4())) is False
    assert "list streams re-read it" in caplog.text


def test_a_summary_publish_that_raises_never_fails_the_writer(monkeypatch, user, settings):
    settings.REALTIME_MODE = "push"

    def exploding(summary):
        raise RuntimeError("the layer exploded")

    monkeypatch.setattr(list_feed.publisher, "publish_summary", exploding)
    run = services.run_create(owner=user, steps=ECHO2)  # its summary goes out after the commit
    assert summaries.run_summary(run_id=run.id)["status"] == "queued"


class Client:
    def __init__(self, ws, run_ids: set[str]):
        self.ws = ws
        self.run_ids = run_ids

    async def frame(self) -> dict:
        """The next frame about one of this test's runs (the shared Redis may carry others')."""
        async with asyncio.timeout(WAIT):
            while True:
                frame = json.loads(await self.ws.recv())
                if frame["type"] != "run_summary" or frame["run_id"] in self.run_ids:
                    return frame


async def in_thread(fn, /, **kwargs):
    """``fn(**kwargs)`` on a worker thread that closes its database connection afterwards."""

    def call():
        try:
            return fn(**kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


def stream(server, token: str):
    return connect(
        f"{server.ws_url}/ws/runs/", additional_headers={"Authorization": f"Token {token}"}, open_timeout=WAIT
    )


def test_summaries_of_each_change_reach_the_owner_and_staff_only(
    daphne_process, user, other_user, staff_user
):
    server = daphne_process
    tokens = {u.username: Token.objects.create(user=u).key for u in (user, other_user, staff_user)}
    earlier = services.run_create(owner=other_user, steps=ECHO2, prompt="bob's")
    mine: set[str] = set()

    async def scenario():
        async with (
            stream(server, tokens["alice"]) as alice_ws,
            stream(server, tokens["bob"]) as bob_ws,
            stream(server, tokens["root"]) as root_ws,
        ):
            alice, bob, root = Client(alice_ws, mine), Client(bob_ws, mine), Client(root_ws, mine)
            hello = await alice.frame()
            assert (hello["type"], hello["run_id"], hello["seq"]) == ("connected", "", 0) and TS.match(
                hello["ts"]
            )
            assert hello["payload"] == {"mode": "push", "runs": []}  # bob's run is not alice's
            assert [r["id"] for r in (await bob.frame())["payload"]["runs"]] == [str(earlier.id)]
            assert str(earlier.id) in [r["id"] for r in (await root.frame())["payload"]["runs"]]

            async def expect(action, **fields):
                await in_thread(action)
                current = await in_thread(summaries.run_summary, run_id=run_id)
                for client in (alice, root):
                    frame = await client.frame()
                    assert frame["type"] == "run_summary" and frame["run_id"] == run_id
                    assert frame["seq"] == current["seq"] and TS.match(frame["ts"])
                    assert frame["payload"] == {"run": current}
                    for key, value in fields.items():
                        assert current[key] == value, key
                return current

            created = await in_thread(services.run_create, owner=user, steps=ECHO2, prompt="alice's")
            run_id = str(created.id)
            mine.add(run_id)
            # run_create already committed: its summary is on the way.
            frame = await alice.frame()
            assert frame["type"] == "run_summary" and frame["payload"]["run"]["status"] == "queued"
            assert frame["payload"]["run"] | {} == {
                **frame["payload"]["run"],
                "id": run_id,
                "owner": "alice",
                "prompt": "alice's",
                "seq": 0,
                "steps_total": 2,
                "steps_succeeded": 0,
                "steps_running": 0,
                "cancel_requested": False,
                "started_at": None,
            }
            assert (await root.frame())["payload"] == frame["payload"]

            await expect(lambda: services.run_start(run_id=created.id), status="processing", seq=1)
            await expect(lambda: services.step_start(run_id=created.id, index=0), steps_running=1, seq=2)
            await expect(
                lambda: services.step_succeed(run_id=created.id, index=0, output={"n": 0}),
                steps_succeeded=1,
                steps_running=0,
                seq=3,
            )
            # A cancel request is no event (the run's state moves only when the executor honours it).
            await in_thread(services.run_cancel, run_id=created.id)
            # One transaction, three events (step skipped, run completed): one summary.
            final = await expect(
                lambda: services.run_cancel_finish(run_id=created.id),
                status="cancelled",
                cancel_requested=True,
                steps_succeeded=1,
                steps_skipped=1,
                seq=5,
            )
            assert final["finished_at"] is not None
            # Bob saw none of it: the next frame he gets is the pong to his ping.
            await bob_ws.send(json.dumps({"type": "ping"}))
            pong = await bob.frame()
            assert (pong["type"], pong["run_id"], pong["seq"]) == ("pong", "", 0)
            # A queued run has no event yet: its snapshot line is at seq 0, and its first
            # event (seq 1) moves the line.
            mine.add(str(earlier.id))
            await in_thread(services.run_start, run_id=earlier.id)
            frame = await bob.frame()
            assert (frame["type"], frame["run_id"], frame["seq"]) == ("run_summary", str(earlier.id), 1)
            assert frame["payload"]["run"]["status"] == "processing"

        # A reconnect's snapshot is the current state, newest first.
        async with stream(server, tokens["root"]) as again_ws:
            runs = (await Client(again_ws, mine).frame())["payload"]["runs"]
            ids = [r["id"] for r in runs]
            assert ids.index(run_id) < ids.index(str(earlier.id))
            assert runs[ids.index(run_id)] == final

    asyncio.run(scenario())


def test_unauthenticated_list_stream_is_closed_with_4401(daphne_process):
    async def scenario():
        async with connect(f"{daphne_process.ws_url}/ws/runs/", open_timeout=WAIT) as ws:
            frame = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return frame, ws.close_code

    frame, code = asyncio.run(scenario())
    assert code == 4401
    assert frame["type"] == "error" and frame["payload"] == {"code": "4401", "message": "not authenticated"}


def test_client_frames_on_the_list_stream(daphne_process, user):
    token = Token.objects.create(user=user).key

    async def scenario():
        async with stream(daphne_process, token) as ws:
            client = Client(ws, set())
            assert (await client.frame())["type"] == "connected"
            await ws.send(json.dumps({"type": "ping"}))
            assert (await client.frame())["type"] == "pong"
            replies = []
            for text in ("not json", "[1]", json.dumps({"type": "subscribe"})):
                await ws.send(text)
                replies.append((await client.frame())["payload"]["code"])
            await ws.send(b"\x00")
            replies.append((await client.frame())["payload"]["code"])
            assert replies == ["malformed", "malformed", "unknown_type", "binary_not_supported"]
            await ws.send("x" * (64 * 1024 + 1))
            assert (await client.frame())["payload"]["code"] == "4009"
            with pytest.raises(ConnectionClosed):
                await client.frame()
            return ws.close_code

    assert asyncio.run(scenario()) == 4009


def test_in_poll_mode_the_list_stream_rereads_its_runs(user):
    """Nothing is published in poll mode: the socket's own re-read brings each change."""
    from tests.processes import daphne_server, subprocess_env

    token = Token.objects.create(user=user).key
    env = subprocess_env(REALTIME_MODE="poll", REALTIME_POLL_INTERVAL="0.2")
    mine: set[str] = set()
    with daphne_server(env=env) as server:

        async def scenario():
            async with stream(server, token) as ws:
                client = Client(ws, mine)
                hello = await client.frame()
                assert hello["payload"] == {"mode": "poll", "runs": []}
                run = await in_thread(services.run_create, owner=user, steps=ECHO2)
                mine.add(str(run.id))
                frame = await client.frame()
                assert frame["type"] == "run_summary" and frame["payload"]["run"]["status"] == "queued"
                await in_thread(services.run_start, run_id=run.id)
                frame = await client.frame()
                assert (frame["seq"], frame["payload"]["run"]["status"]) == (1, "processing")

        asyncio.run(scenario())


def test_a_summary_lost_in_transit_reaches_the_page_by_the_next_tick(user, monkeypatch):
    """Push mode, the layer healthy, this writer's summaries published to nobody: the server's
    run-list poller brings each change within REALTIME_LIST_REFRESH_INTERVAL, to every page of the user.

    Red with the healthy socket left out of the run-list poller (re-read only in poll mode or degraded).
    """
    from realtime.runlist import list_feed

    lost = []
    monkeypatch.setattr(
        list_feed.publisher, "publish_summary", lambda summary: lost.append(summary["id"]) or True
    )
    token = Token.objects.create(user=user).key
    mine: set[str] = set()
    with daphne_server(env=subprocess_env(REALTIME_LIST_REFRESH_INTERVAL="0.5")) as server:

        async def scenario():
            async with stream(server, token) as first_ws, stream(server, token) as second_ws:
                pages = [Client(first_ws, mine), Client(second_ws, mine)]
                for page in pages:
                    assert (await page.frame())["payload"] == {"mode": "push", "runs": []}
                run = await in_thread(services.run_create, owner=user, steps=ECHO2)
                mine.add(str(run.id))
                for page in pages:
                    frame = await page.frame()
                    assert (frame["type"], frame["seq"], frame["payload"]["run"]["status"]) == (
                        "run_summary",
                        0,
                        "queued",
                    )
                await in_thread(services.run_start, run_id=run.id)
                for page in pages:
                    frame = await page.frame()
                    assert (frame["seq"], frame["payload"]["run"]["status"]) == (1, "processing")
                    assert frame["payload"]["run"] == await in_thread(summaries.run_summary, run_id=run.id)
                return str(run.id)

        try:
            run_id = asyncio.run(scenario())
        except Exception:
            print(server.log()[-6000:])
            raise
        assert lost.count(run_id) == 2  # neither change came by push
        assert_clean_log(server)


# --- Parity with /ws/runs/<id>/ (issue 11's hardening): the buffer bound, the layer down.
# (The access re-check of both: test_protocol_daphne.py::test_revoked_credentials_close_an_open_socket_4401.)


def test_a_list_client_that_stops_reading_is_bounded_then_resynced(user, token):
    # The rate limit off, the bound at its minimum: 100,000 pongs (8 MB) are past it and the kernel's buffers.
    env = subprocess_env(REALTIME_CLIENT_FRAMES_BURST=str(PINGS), REALTIME_MAX_CLIENT_BUFFER=str(16 * 1024))
    with daphne_server(env=env) as server:
        sock = _raw_socket(server, "/ws/runs/", token)
        try:
            sock.sendall(_masked_ping() * 100_000)  # and never read: its pongs fill the bound
            wait_for(lambda: _cpu_idle(server.pid), what="every ping handled")
            run = services.run_create(owner=user, steps=ECHO2)  # its summary finds the client behind
            seen = _frames_until_the_run_shows(sock, str(run.id))
        except Exception:
            print(server.log()[-6000:])
            raise
        finally:
            sock.close()
        pongs = sum(1 for f in seen if f["type"] == "pong")
        resync = [f for f in seen if f["type"] == "connected" and f["payload"].get("resync")]
        assert pongs < 100_000 // 2  # the rest were dropped, not buffered
        # Resynced (by this run's summary, or another's on the shared Redis) before the run showed.
        assert resync, [f["type"] for f in seen[-5:]]
        assert_clean_log(server)


def _frames_until_the_run_shows(sock, run_id: str) -> list[dict]:
    """Frames until the run shows up: in a resync's snapshot, or as a run_summary."""
    from tests.scenarios.test_protocol_daphne import _read_frame

    seen = []
    while True:
        opcode, data = _read_frame(sock)
        if opcode == 0x8:
            raise AssertionError(f"closed {int.from_bytes(data[:2], 'big')} before the run showed")
        if opcode != 0x1:
            continue  # autobahn's keep-alive ping (binary payload), not a frame of ours
        frame = json.loads(data)
        seen.append(frame)
        if frame["type"] == "connected" and run_id in [r["id"] for r in frame["payload"]["runs"]]:
            return seen
        if frame["type"] == "run_summary" and frame["run_id"] == run_id:
            return seen


def test_with_the_layer_down_a_list_stream_connects_and_re_reads_until_it_is_back(user, token):
    redis = OwnRedis()
    redis.start()
    try:
        env = subprocess_env(
            REDIS_URL=redis.url,
            REALTIME_POLL_INTERVAL="0.5",
            REALTIME_PUBLISH_TIMEOUT="0.5",
            REALTIME_LIST_REFRESH_INTERVAL="600",  # only the degraded re-read can show the change
        )
        with daphne_server(env=env) as server:
            redis.stop()

            async def scenario():
                async with stream(server, token) as ws:
                    hello = json.loads(await ws.recv())
                    assert hello["type"] == "connected", hello
                    # Created by this process: published on the machine's Redis, not the server's.
                    run = await in_thread(services.run_create, owner=user, steps=ECHO2)
                    async with asyncio.timeout(WAIT):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame["type"] == "run_summary" and frame["run_id"] == str(run.id):
                                break
                    await asyncio.sleep(3)  # several poll intervals down: still one warning
                    redis.start()
                    await asyncio.to_thread(
                        wait_for, lambda: "channel layer is back" in server.log(), what="the layer back"
                    )
                    await ping_pong(ws)

            asyncio.run(scenario())
            log = server.log()
            assert log.count("channel layer unreachable") == 1, log[-4000:]
            assert log.count("channel layer is back") == 1, log[-4000:]
            assert_clean_log(server)
    finally:
        redis.stop()
