"""realtime.delivery.hub: one channel per process, one group membership per watched run.

With real Redis layers (both kinds): many watchers of a run cost the process
one ``group_add``, every watcher still gets every event once, the last one out
leaves the group, and a watcher arriving while it is being left joins again.
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from realtime.delivery.hub import get_hub
from realtime.events import shards
from realtime.protocol.frames import group_name
from runs import services
from tests.realtime.support import WAIT, check_frames, open_socket, receive_until_close, token_headers

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("layer", "dispatched"),
]


@pytest.fixture
def layer_calls(monkeypatch):
    """Counts the channels the process opens and the layer's group_add / group_discard calls
    (and still makes them)."""
    layer = get_channel_layer()
    calls = {"new_channel": [], "group_add": [], "group_discard": []}
    targets = {
        "new_channel": (shards, "new_receiving_channel"),
        "group_add": (layer, "group_add"),
        "group_discard": (layer, "group_discard"),
    }
    for name, (owner, attribute) in targets.items():
        real = getattr(owner, attribute)

        async def counting(*args, _real=real, _name=name):
            if not (args and str(args[0]).startswith("realtime.probe.")):  # the layer probe's own group
                calls[_name].append(args)
            return await _real(*args)

        monkeypatch.setattr(owner, attribute, counting)
    return calls


def _new_run(user, steps: int = 2):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(steps)])
    services.run_start(run_id=run.id)  # seq 1
    return run


def _finish(run_id, steps: int = 2) -> None:
    for index in range(steps):
        services.step_start(run_id=run_id, index=index)
        services.step_succeed(run_id=run_id, index=index, output={"n": index})
    services.run_succeed(run_id=run_id, output=None)


async def test_many_watchers_of_a_run_are_one_membership_and_all_get_every_event(user, token, layer_calls):
    run = await sync_to_async(_new_run)(user)
    # One watcher first, then eleven at once: a join of a run already watched here adds
    # no membership (kills run.py's first join asking for a refresh: joined_once = True).
    first = await open_socket(run.id, headers=token_headers(token))
    opened = [
        first,
        *await asyncio.gather(*(open_socket(run.id, headers=token_headers(token)) for _ in range(11))),
    ]
    assert len(layer_calls["new_channel"]) == 1  # one channel for the process
    assert len(layer_calls["group_add"]) == 1  # one membership for the run, not 12
    hub = get_hub(get_channel_layer())
    assert len(hub.watchers[group_name(run.id)]) == 12

    await sync_to_async(_finish)(run.id)
    for ws, connected in opened:
        frames, code = await receive_until_close(ws)
        assert code == 1000
        check_frames(frames, run_id=run.id, first_seq=connected["seq"] + 1)
        assert frames[-1]["type"] == "run_completed" and frames[-1]["seq"] == 6
        await ws.disconnect()
    # The last watcher out left the group; the process watches nothing now.
    assert len(layer_calls["group_discard"]) == 1
    assert hub.watchers == {}


async def test_two_runs_share_the_channel_and_get_only_their_own_events(user, token, layer_calls):
    first, second = [await sync_to_async(_new_run)(user) for _ in range(2)]
    ws1, _ = await open_socket(first.id, headers=token_headers(token))
    ws2, _ = await open_socket(second.id, headers=token_headers(token))
    assert len(layer_calls["new_channel"]) == 1 and len(layer_calls["group_add"]) == 2
    await sync_to_async(_finish)(second.id)
    frames, _ = await receive_until_close(ws2)
    assert {f["run_id"] for f in frames} == {str(second.id)}
    await sync_to_async(_finish)(first.id)
    # Everything ws1 got up to its own close: nothing of the other run came before it.
    frames, _ = await receive_until_close(ws1)
    check_frames(frames, run_id=first.id, first_seq=2)
    assert frames[-1]["seq"] == 6
    await ws1.disconnect()
    await ws2.disconnect()


async def test_a_watcher_arriving_as_the_last_one_leaves_joins_again(user, token, layer_calls, monkeypatch):
    run = await sync_to_async(_new_run)(user, steps=3)
    layer = get_channel_layer()
    hub = get_hub(layer)
    discarding, let_discard, second_joining = asyncio.Event(), asyncio.Event(), asyncio.Event()
    counted_discard, real_join = layer.group_discard, hub.join

    async def held_discard(*args):
        discarding.set()  # named point: the last watcher is leaving the group
        await asyncio.wait_for(let_discard.wait(), WAIT)
        return await counted_discard(*args)

    async def noted_join(*args, **kwargs):
        second_joining.set()  # runs on to where it waits for the leave, before this event is seen
        return await real_join(*args, **kwargs)

    monkeypatch.setattr(layer, "group_discard", held_discard)
    monkeypatch.setattr(hub, "join", noted_join)
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    second_joining.clear()
    # The first watcher leaves (its group_discard is under way) while a second arrives.
    leaving = asyncio.create_task(ws.disconnect(timeout=WAIT))
    arriving = asyncio.create_task(open_socket(run.id, headers=token_headers(token)))
    try:
        await asyncio.wait_for(discarding.wait(), WAIT)
        await asyncio.wait_for(second_joining.wait(), WAIT)
        assert len(layer_calls["group_add"]) == 1  # the second waits for the leave
        let_discard.set()
        await leaving
        ws2, connected = await arriving
    finally:
        let_discard.set()
        await asyncio.gather(leaving, return_exceptions=True)
        if not arriving.done():
            arriving.cancel()
    assert len(layer_calls["group_discard"]) == 1
    assert len(layer_calls["group_add"]) == 2  # joined again after the leave, not before it
    await sync_to_async(_finish)(run.id, 3)
    frames, code = await receive_until_close(ws2)
    assert code == 1000
    check_frames(frames, run_id=run.id, first_seq=connected["seq"] + 1)
    assert frames[-1]["seq"] == 8
    await ws2.disconnect()


async def test_a_cancelled_consumer_leaves_the_hub_and_the_probe(user, token):
    """Daphne cancels an application that outlives its socket; nothing may keep it registered."""
    from realtime.delivery import failover

    run = await sync_to_async(_new_run)(user)
    ws, _ = await open_socket(run.id, headers=token_headers(token))
    hub = get_hub(get_channel_layer())
    assert len(hub.watchers[group_name(run.id)]) == 1
    assert len(failover.get_probe().consumers) == 1
    ws.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ws.future
    assert hub.watchers == {}
    assert failover.get_probe().consumers == set()
