"""The Procfile's web command with two Daphne processes on one port (server/web_command.py).

Which process serves a client is read from the kernel (tests.processes.serving_pid:
the server end of the client's TCP connection, found in /proc), not from a hook
in the server. Events come from runs.services in the test process, publishing
to the same Redis, so every step happens when the test says.
"""

import asyncio
import json
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from runs import services
from server import web_command
from tests.processes import free_port, serving_pid, subprocess_env, web_servers
from tests.realtime.support import LIVE_STACK, LiveClient, check_frames, logged_frames
from tests.waiting import WAIT

pytestmark = LIVE_STACK
PER_PROCESS = 3
MAX_CONNECTS = 80  # the kernel hashes each connection to a process: 2 processes are both hit long before


class Client(LiveClient):
    """A client, and the pid of the web process serving its socket now."""

    def __init__(self, ws, pid: int, first: dict) -> None:
        super().__init__(ws, [first])
        self.pid = pid

    def last_seq(self) -> int:
        return self.frames[-1]["seq"] if self.events() else 0


async def _open(stack: AsyncExitStack, server, run_id, token: str, since: int | None = None) -> Client:
    query = "" if since is None else f"?since={since}"
    ws = await stack.enter_async_context(
        connect(
            f"{server.ws_url}/ws/runs/{run_id}/{query}",
            additional_headers={"Authorization": f"Token {token}"},
            open_timeout=WAIT,
        )
    )
    pid = serving_pid(server.port, ws.local_address[1], server.children())
    assert pid is not None, "no web process holds the connection"
    return Client(ws, pid, json.loads(await asyncio.wait_for(ws.recv(), WAIT)))


async def _clients_on_each(stack, server, run_id, token: str, pids: list[int], since=None) -> list[Client]:
    """Connect until each of ``pids`` serves PER_PROCESS clients (others landing elsewhere are kept too)."""
    clients: list[Client] = []
    for _ in range(MAX_CONNECTS):
        if all(sum(c.pid == pid for c in clients) >= PER_PROCESS for pid in pids):
            return clients
        clients.append(await _open(stack, server, run_id, token, since))
    raise AssertionError(f"{MAX_CONNECTS} connects never spread over {pids}: {[c.pid for c in clients]}")


async def _resume(stack, server, run_id, token: str, client: Client) -> None:
    """Reconnect ``client`` with ``?since=`` its last seq; its frames go on in the same list."""
    resumed = await _open(stack, server, run_id, token, since=client.last_seq())
    client.ws = resumed.ws
    client.frames += resumed.frames


async def _live_after_the_first_step(stack, server, run_id, token: str) -> list[Client]:
    """Clients on each web process, once they have read run_status and step 0's two events (seqs 1-3)."""
    clients = await _clients_on_each(stack, server, run_id, token, server.children())
    await sync_to_async(services.run_start)(run_id=run_id)
    await _step(run_id, 0)
    for client in clients:
        await client.read(3)
    return clients


async def _succeed_and_read_to_close(run_id, clients: list[Client]) -> list[int | None]:
    """The run succeeds; each client's close code once it has read everything up to it."""
    await sync_to_async(services.run_succeed)(run_id=run_id, output={"done": True})
    return await asyncio.gather(*(client.read_to_close() for client in clients))


async def _each_got_the_log(run_id, clients: list[Client], steps: int) -> None:
    logged = await logged_frames(run_id)
    assert len(logged) == 2 + 2 * steps
    for client in clients:
        assert client.events() == logged


@sync_to_async
def _step(run_id, index: int) -> None:
    services.step_start(run_id=run_id, index=index)
    services.step_succeed(run_id=run_id, index=index, output={"n": index})


async def _token_and_run(user, steps: int):
    """The user's API token, and a queued run of ``steps`` echo steps."""
    token = (await sync_to_async(Token.objects.create)(user=user)).key
    run = await sync_to_async(services.run_create)(
        owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(steps)]
    )
    return token, run


async def _until(condition, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


def test_web_concurrency_defaults_to_the_cores(monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert web_command.default_processes() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert web_command.default_processes() == 3
    monkeypatch.setenv("WEB_CONCURRENCY", "0")
    with pytest.raises(SystemExit, match="at least 1"):
        web_command.default_processes()


async def test_clients_on_each_web_process_get_every_event_once_in_order(user):
    steps = 3
    token, run = await _token_and_run(user, steps)
    with web_servers(subprocess_env(), processes=2) as server:
        pids = server.children()
        assert len(pids) == 2
        for pid in pids:  # each on uvloop (server/daphne_uvloop.py), the web command's default
            assert b"server.daphne_uvloop" in Path(f"/proc/{pid}/cmdline").read_bytes()
        async with AsyncExitStack() as stack:
            clients = await _clients_on_each(stack, server, run.id, token, pids)
            for client in clients:
                assert (client.frames[0]["type"], client.frames[0]["seq"]) == ("connected", 0)

            await sync_to_async(services.run_start)(run_id=run.id)
            for index in range(steps):
                await _step(run.id, index)
            codes = await _succeed_and_read_to_close(run.id, clients)

    assert codes == [1000] * len(clients)
    await _each_got_the_log(run.id, clients, steps)  # every event, once, in order, the log's own bytes
    assert {client.pid for client in clients} == set(pids)


async def test_a_killed_web_process_is_restarted_and_its_clients_resume(user):
    steps = 4
    token, run = await _token_and_run(user, steps)
    with web_servers(subprocess_env(), processes=2) as server:
        pids = server.children()
        async with AsyncExitStack() as stack:
            clients = await _live_after_the_first_step(stack, server, run.id, token)

            victim, survivor = pids
            os.kill(victim, signal.SIGKILL)
            dropped = [c for c in clients if c.pid == victim]
            for client in dropped:
                assert await client.read_to_close() != 1000  # no closing handshake: the process died
            await _step(run.id, 1)  # while it is down: its clients must get this on resume

            await _until(lambda: server.listening() >= 3, "the killed process was never replaced")
            restarted = set(server.children()) - {survivor}
            assert len(restarted) == 1 and victim not in restarted
            assert "restarting it" in server.log()

            for client in dropped:
                await _resume(stack, server, run.id, token, client)
            # The new process serves clients too (fresh ones, replaying from seq 0).
            newcomers = await _clients_on_each(stack, server, run.id, token, sorted(restarted), since=0)

            for index in range(2, steps):
                await _step(run.id, index)
            await sync_to_async(services.run_succeed)(run_id=run.id, output={"done": True})
            everyone = clients + newcomers
            codes = await asyncio.gather(*(client.read_to_close() for client in everyone))

    assert codes == [1000] * len(everyone)
    logged = await logged_frames(run.id)
    assert len(logged) == 2 + 2 * steps
    for client in everyone:
        check_frames(client.events(), run_id=run.id, first_seq=1)
        assert client.events() == logged
    for client in dropped:
        resumed = [f for f in client.frames if f["type"] == "connected"][1]
        assert resumed["payload"]["recovered"] is True


async def test_sigterm_stops_every_web_process(user):
    token, run = await _token_and_run(user, 1)
    with web_servers(subprocess_env(), processes=2) as server:
        pids = server.children()
        async with AsyncExitStack() as stack:
            clients = await _clients_on_each(stack, server, run.id, token, pids)
            server.signal(signal.SIGTERM)
            assert server.popen.wait(timeout=WAIT) == 0
            for client in clients:
                assert await client.read_to_close() is not None
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped by the parent
        assert "stopping the web processes" in server.log()
        assert "restarting" not in server.log()


async def test_a_deploy_closes_every_socket_with_1012_and_its_clients_resume_on_the_next_release(user):
    """SIGTERM (what a platform sends at a deploy) closes each socket with 1012, service restart;
    the events committed while no web process runs reach every client when it resumes with
    ``?since=`` on the next release."""
    steps = 2
    token, run = await _token_and_run(user, steps)
    port = free_port()
    with web_servers(subprocess_env(), processes=2, port=port) as server:
        pids = server.children()
        async with AsyncExitStack() as stack:
            clients = await _live_after_the_first_step(stack, server, run.id, token)
            server.signal(signal.SIGTERM)
            codes = await asyncio.gather(*(client.read_to_close() for client in clients))
            assert server.popen.wait(timeout=WAIT) == 0
        log = server.log()
    assert codes == [1012] * len(clients)
    assert all(client.ws.close_reason == "service restart" for client in clients)
    for pid in pids:
        per_process = sum(client.pid == pid for client in clients)
        assert f"closed {per_process} WebSockets with 1012 (service restart)" in log
    assert "did not answer the close" not in log and "Traceback" not in log

    await _step(run.id, 1)  # between the releases
    with web_servers(subprocess_env(), processes=2, port=port) as server:
        async with AsyncExitStack() as stack:
            for client in clients:
                await _resume(stack, server, run.id, token, client)
            codes = await _succeed_and_read_to_close(run.id, clients)
    assert codes == [1000] * len(clients)
    await _each_got_the_log(run.id, clients, steps)  # nothing lost, nothing twice, across the deploy
    for client in clients:
        resumed = [f for f in client.frames if f["type"] == "connected"][1]
        assert resumed["payload"]["recovered"] is True
