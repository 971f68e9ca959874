"""The user-level stream /ws/runs/ through a real Daphne: snapshot, exact run_summary frames, access.

The test process changes runs through the services (as a worker would); each
change's summary is published after commit through Redis to the Daphne
process, whose consumer relays it. One change at a time, each frame awaited:
the frames are exact.
"""

import asyncio
import json

import pytest
from django.db import connections
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime import summaries
from runs import services
from tests.realtime.support import TS

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

WAIT = 30.0
ECHO2 = [{"tool": "echo", "args": {"n": 0}}, {"tool": "echo", "args": {"n": 1}}]


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
            assert hello["type"] == "connected" and hello["run_id"] == "" and TS.match(hello["ts"])
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
            assert (await bob.frame())["type"] == "pong"

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
