"""Resume with ?since=S, and the same events over HTTP (GET /api/runs/<id>/events/)."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from realtime.events import retention
from realtime.models import RunEvent
from runs import services
from tests.realtime.support import (
    check_frames,
    logged_frames,
    open_socket,
    receive,
    receive_close,
    receive_until_close,
    token_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("dispatched"),
]


def _run_with_two_events(user):
    """A run of two echo steps, started, step 0 running: events 1 (run_status), 2 (step_started)."""
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(2)])
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    return run


make_run = sync_to_async(_run_with_two_events)


def _finish(run_id):
    services.step_succeed(run_id=run_id, index=0, output={"n": 0})
    services.step_start(run_id=run_id, index=1)
    services.step_succeed(run_id=run_id, index=1, output={"n": 1})
    services.run_succeed(run_id=run_id, output=[{"n": 0}, {"n": 1}])


async def _resume(run, token, since):
    ws, connected = await open_socket(run.id, headers=token_headers(token), query=f"since={since}")
    assert connected["type"] == "connected"
    return ws, connected


@pytest.mark.usefixtures("layer", "realtime_mode")
@pytest.mark.parametrize("since", [0, 1])
async def test_since_in_the_log_recovers_the_missed_events_then_live_ones(user, token, since):
    run = await make_run(user)
    ws, connected = await _resume(run, token, since)
    try:
        assert connected["seq"] == 2
        assert connected["payload"]["recovered"] is True
        backlog = [await receive(ws) for _ in range(2 - since)]
        assert backlog == await logged_frames(run.id, after=since)
        await sync_to_async(_finish)(run.id)
        live, code = await receive_until_close(ws)
        assert code == 1000
        check_frames(backlog + live, run_id=run.id, first_seq=since + 1)
        assert [f["type"] for f in live] == [
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "run_completed",
        ]
    finally:
        await ws.disconnect()


@pytest.mark.usefixtures("layer", "realtime_mode")
async def test_since_equal_to_seq_is_up_to_date(user, token):
    run = await make_run(user)
    ws, connected = await _resume(run, token, 2)
    try:
        assert (connected["seq"], connected["payload"]["recovered"]) == (2, True)
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output=None)
        assert (await receive(ws))["seq"] == 3
    finally:
        await ws.disconnect()


def _age_events(run_id, upto: int, days: float) -> None:
    RunEvent.objects.filter(run_id=run_id, seq__lte=upto).update(ts=timezone.now() - timedelta(days=days))


@pytest.mark.usefixtures("layer", "realtime_mode")
async def test_since_before_the_retained_log_is_not_recovered(user, token):
    run = await make_run(user)
    await sync_to_async(_age_events)(run.id, upto=1, days=8)
    assert await sync_to_async(retention.prune_run_events)() == 1
    ws, connected = await _resume(run, token, 0)
    try:
        assert (connected["seq"], connected["payload"]["recovered"]) == (2, False)
        assert connected["payload"]["run"]["steps"][0]["status"] == "running"  # the snapshot is the truth
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output=None)
        assert (await receive(ws))["seq"] == 3  # no backlog: straight to the live event
    finally:
        await ws.disconnect()


@pytest.mark.usefixtures("layer", "realtime_mode")
@pytest.mark.parametrize("since", [3, 10**30])
async def test_since_beyond_the_log_is_not_recovered(user, token, since):
    run = await make_run(user)
    ws, connected = await _resume(run, token, since)
    try:
        assert (connected["seq"], connected["payload"]["recovered"]) == (2, False)
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output=None)
        assert (await receive(ws))["seq"] == 3
    finally:
        await ws.disconnect()


@pytest.mark.parametrize("query", ["since=0&since=1", "since=abc&since=1"])
async def test_a_repeated_since_counts_its_last_value(user, token, query):
    """As ``request.GET`` over HTTP, the last ``since`` counts.

    Kills realtime/sockets/run.py's ``values[-1]`` → ``values[-0]``.
    """
    run = await make_run(user)
    ws, connected = await open_socket(run.id, headers=token_headers(token), query=query)
    try:
        assert (connected["type"], connected["seq"], connected["payload"]["recovered"]) == (
            "connected",
            2,
            True,
        )
        assert [await receive(ws)] == await logged_frames(run.id, after=1)  # the backlog after 1, not 0
    finally:
        await ws.disconnect()


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "0x1", "²", "1e3"])
async def test_a_malformed_since_closes_4400(user, token, since):
    run = await make_run(user)
    ws, frame = await open_socket(run.id, headers=token_headers(token), query=f"since={since}")
    assert (frame["type"], frame["payload"]["code"]) == ("error", "4400")
    assert await receive_close(ws) == 4400
    await ws.disconnect()


@pytest.mark.usefixtures("layer", "realtime_mode")
async def test_resuming_a_finished_run_sends_the_rest_then_closes(user, token):
    run = await make_run(user)
    await sync_to_async(_finish)(run.id)
    ws, connected = await _resume(run, token, 1)
    frames, code = await receive_until_close(ws)
    assert (connected["seq"], connected["payload"]["recovered"], code) == (6, True, 1000)
    assert frames == await logged_frames(run.id, after=1)
    assert frames[-1]["type"] == "run_completed"
    await ws.disconnect()


# --- HTTP ------------------------------------------------------------------------------


@pytest.mark.usefixtures("layer", "realtime_mode")
async def test_http_events_are_the_frames_the_socket_sends(user, token, api):
    run = await make_run(user)
    await sync_to_async(_finish)(run.id)
    ws, _ = await _resume(run, token, 2)
    socket_frames, _ = await receive_until_close(ws)
    await ws.disconnect()
    response = await sync_to_async(api.get)(f"/api/runs/{run.id}/events/?since=2")
    assert response.status_code == 200
    body = response.json()
    assert body["events"] == socket_frames
    assert {k: body[k] for k in ("run_id", "since", "seq", "recovered", "has_more")} == {
        "run_id": str(run.id),
        "since": 2,
        "seq": 6,
        "recovered": True,
        "has_more": False,
    }


@pytest.mark.django_db(transaction=True)
def test_http_events_paging_and_recovery(user, api):
    run = _run_with_two_events(user)
    _finish(run.id)
    url = f"/api/runs/{run.id}/events/"
    page = api.get(url, {"since": 0, "limit": 4}).json()
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4]
    assert (page["recovered"], page["has_more"]) == (True, True)
    page = api.get(url, {"since": 4, "limit": 4}).json()
    assert [e["seq"] for e in page["events"]] == [5, 6]
    assert (page["recovered"], page["has_more"]) == (True, False)
    assert api.get(url, {"since": 6}).json()["events"] == []
    assert api.get(url, {"since": 6}).json()["recovered"] is True
    beyond = api.get(url, {"since": 7}).json()
    assert (beyond["recovered"], beyond["events"]) == (False, [])
    _age_events(run.id, upto=2, days=30)
    retention.prune_run_events()
    pruned = api.get(url, {"since": 0}).json()
    assert (pruned["recovered"], pruned["events"]) == (False, [])
    assert [e["seq"] for e in api.get(url, {"since": 2}).json()["events"]] == [3, 4, 5, 6]


@pytest.mark.django_db(transaction=True)
def test_http_events_of_someone_elses_run_is_404(other_user, api):
    run = _run_with_two_events(other_user)
    response = api.get(f"/api/runs/{run.id}/events/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "query", ["since=abc", "since=-1", "since=1.5", "limit=0", "limit=1001", "limit=100000", "since=1e3"]
)
def test_http_events_bad_query_is_400(user, api, query):
    run = _run_with_two_events(user)
    response = api.get(f"/api/runs/{run.id}/events/?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


@pytest.mark.django_db(transaction=True)
def test_http_events_without_since_start_at_the_first(user, api):
    run = _run_with_two_events(user)
    body = api.get(f"/api/runs/{run.id}/events/").json()
    assert (body["since"], body["recovered"], [e["seq"] for e in body["events"]]) == (0, True, [1, 2])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("limit", [1, 1000])
def test_http_events_limit_goes_from_1_to_1000(user, api, limit):
    run = _run_with_two_events(user)
    response = api.get(f"/api/runs/{run.id}/events/", {"since": 0, "limit": limit})
    assert response.status_code == 200
    assert len(response.json()["events"]) == min(limit, 2)


@pytest.mark.django_db(transaction=True)
def test_http_events_huge_since_is_not_a_500(user, api):
    run = _run_with_two_events(user)
    response = api.get(f"/api/runs/{run.id}/events/", {"since": 10**30})
    assert response.status_code == 200
    assert (response.json()["recovered"], response.json()["events"]) == (False, [])


@pytest.mark.django_db(transaction=True)
def test_http_events_needs_authentication(user, client):
    run = _run_with_two_events(user)
    assert client.get(f"/api/runs/{run.id}/events/").status_code == 401
