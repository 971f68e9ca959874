"""One test per event type: perform the action, check the exact frames, and that
the `connected` snapshot plus the events equals a fresh snapshot (verify_action).

Every test runs under both channel layers (the ``layer`` fixture).
"""

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import Client

from realtime.models import RunEvent
from realtime.protocol.frames import format_ts
from runs import executor, services
from runs.models import Run, Step
from tests.realtime.support import (
    check_frames,
    completed_payload,
    logged_frames,
    open_socket,
    receive,
    run_seq,
    step_json,
    token_headers,
    verify_action,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("layer", "realtime_mode", "dispatched"),
]


def _run(user, *tools, started=False, running=None, succeeded=()):
    """A run of ``tools`` (echo args {"n": i}); optionally started and with steps advanced."""
    steps = [{"tool": tool, "args": {"n": i} if tool == "echo" else {}} for i, tool in enumerate(tools)]
    run = services.run_create(owner=user, steps=steps)
    if started:
        services.run_start(run_id=run.id)
    for index in succeeded:
        services.step_start(run_id=run.id, index=index)
        services.step_succeed(run_id=run.id, index=index, output={"n": index})
    if running is not None:
        services.step_start(run_id=run.id, index=running, worker="celery@host-a")
    return run


make_run = sync_to_async(_run)


def _kinds(frames):
    return [
        (f["type"], f["payload"]["step"]["index"]) if "step" in f["payload"] else f["type"] for f in frames
    ]


async def test_run_status(user, token):
    run = await make_run(user, "echo")
    frames = await verify_action(
        run.id, lambda: services.run_start(run_id=run.id), headers=token_headers(token), count=1
    )
    started_at = (await sync_to_async(Run.objects.get)(pk=run.id)).started_at
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("run_status", {"status": "processing", "started_at": format_ts(started_at)})
    ]


async def test_step_started(user, token):
    run = await make_run(user, "echo", "echo", started=True)
    frames = await verify_action(
        run.id,
        lambda: services.step_start(run_id=run.id, index=0, worker="celery@host-a"),
        headers=token_headers(token),
        count=1,
    )
    step = await step_json(run.id, 0)
    assert step["status"] == "running" and step["tool"] == "echo" and step["args"] == {"n": 0}
    assert step["worker"] == "celery@host-a"  # who executes it (the run timeline shows it)
    assert [(f["type"], f["payload"]) for f in frames] == [("step_started", {"step": step})]


async def test_step_succeeded(user, token):
    run = await make_run(user, "echo", "echo", started=True, running=0)
    frames = await verify_action(
        run.id,
        lambda: services.step_succeed(run_id=run.id, index=0, output={"answer": [1, "two"]}),
        headers=token_headers(token),
        count=1,
    )
    step = await step_json(run.id, 0)
    assert step["status"] == "succeeded" and step["output"] == {"answer": [1, "two"]}
    assert [(f["type"], f["payload"]) for f in frames] == [("step_succeeded", {"step": step})]


async def test_step_retried(user, token):
    # Issue 21 #8: a taken-over step's new attempt moved its started_at without an
    # event, so snapshot + events no longer equalled GET /api/runs/<id>/.
    run = await make_run(user, "echo", "echo", started=True, running=0)
    first = await step_json(run.id, 0)
    frames = await verify_action(
        run.id,
        lambda: services.step_retry(run_id=run.id, index=0, worker="celery@host-b"),
        headers=token_headers(token),
        count=1,
    )
    step = await step_json(run.id, 0)
    assert step["status"] == "running" and step["attempts"] == 2 and first["attempts"] == 1
    # The new attempt's worker is the one that took the step over.
    assert (first["worker"], step["worker"]) == ("celery@host-a", "celery@host-b")
    assert step["started_at"] > first["started_at"]
    assert [(f["type"], f["payload"]) for f in frames] == [("step_retried", {"step": step})]


async def test_step_failed_skips_the_rest_and_fails_the_run(user, token):
    run = await make_run(user, "echo", "echo", "echo", started=True, running=0)
    frames = await verify_action(
        run.id,
        lambda: services.step_fail(run_id=run.id, index=0, error="boom"),
        headers=token_headers(token),
        count=4,
    )
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("step_failed", {"step": await step_json(run.id, 0)}),
        ("step_skipped", {"step": await step_json(run.id, 1)}),
        ("step_skipped", {"step": await step_json(run.id, 2)}),
        ("run_completed", await completed_payload(run.id)),
    ]
    assert frames[0]["payload"]["step"]["error"] == "boom"
    assert frames[3]["payload"]["status"] == "failed"
    assert frames[3]["payload"]["error"] == "step 1 (echo) failed: boom"


async def test_step_skipped(user, token):
    run = await make_run(user, "echo", "echo", started=True, running=0)
    frames = await verify_action(
        run.id,
        lambda: services.run_fail(run_id=run.id, error="lost"),
        headers=token_headers(token),
        count=3,
    )
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("step_skipped", {"step": await step_json(run.id, 0)}),
        ("step_skipped", {"step": await step_json(run.id, 1)}),
        ("run_completed", await completed_payload(run.id)),
    ]
    assert frames[0]["payload"]["step"]["status"] == "skipped"
    assert frames[0]["payload"]["step"]["error"] == "lost"  # was running
    assert frames[1]["payload"]["step"]["started_at"] is None  # never reached
    assert frames[2]["payload"]["error"] == "lost"


async def test_run_completed_succeeded_through_the_executor(user, token):
    run = await make_run(user, "echo", "echo")
    frames = await verify_action(
        run.id, lambda: executor.execute_run(run_id=run.id), headers=token_headers(token), count=6
    )
    assert _kinds(frames) == [
        "run_status",
        ("step_started", 0),
        ("step_succeeded", 0),
        ("step_started", 1),
        ("step_succeeded", 1),
        "run_completed",
    ]
    assert frames[-1]["payload"] == await completed_payload(run.id)
    assert frames[-1]["payload"]["status"] == "succeeded"
    assert frames[-1]["payload"]["output"] == [{"n": 0}, {"n": 1}]
    assert frames[-1]["payload"]["error"] == ""


async def test_run_completed_failed_through_the_executor(user, token):
    run = await make_run(user, "echo", "fail", "echo")
    frames = await verify_action(
        run.id, lambda: executor.execute_run(run_id=run.id), headers=token_headers(token), count=7
    )
    assert _kinds(frames) == [
        "run_status",
        ("step_started", 0),
        ("step_succeeded", 0),
        ("step_started", 1),
        ("step_failed", 1),
        ("step_skipped", 2),
        "run_completed",
    ]
    assert frames[4]["payload"]["step"]["error"] == "failed on purpose"
    assert frames[-1]["payload"] == await completed_payload(run.id)
    assert frames[-1]["payload"]["status"] == "failed"
    assert frames[-1]["payload"]["output"] is None


async def test_run_completed_cancelled_while_processing(user, token):
    run = await make_run(user, "echo", "echo", "echo", started=True, succeeded=[0])
    seq = await run_seq(run.id)
    # Asking to cancel a processing run changes nothing a client sees yet.
    await sync_to_async(services.run_cancel)(run_id=run.id)
    assert await run_seq(run.id) == seq
    frames = await verify_action(
        run.id, lambda: executor.execute_run(run_id=run.id), headers=token_headers(token), count=3
    )
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("step_skipped", {"step": await step_json(run.id, 1)}),
        ("step_skipped", {"step": await step_json(run.id, 2)}),
        ("run_completed", await completed_payload(run.id)),
    ]
    assert frames[-1]["payload"]["status"] == "cancelled"


async def test_cancel_of_a_queued_run(user, token):
    run = await make_run(user, "echo", "echo")
    frames = await verify_action(
        run.id, lambda: services.run_cancel(run_id=run.id), headers=token_headers(token), count=3
    )
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("step_skipped", {"step": await step_json(run.id, 0)}),
        ("step_skipped", {"step": await step_json(run.id, 1)}),
        ("run_completed", await completed_payload(run.id)),
    ]
    assert frames[-1]["payload"]["status"] == "cancelled"
    assert frames[-1]["payload"]["started_at"] is None


def _saves_that_change_nothing(run_id):
    run = Run.objects.get(pk=run_id)
    run.save(update_fields=["updated_at"])
    run.save(update_fields=["status", "updated_at"])  # the same status
    step = Step.objects.get(run_id=run_id, index=0)
    step.save()
    step.save(update_fields=["output"])
    assert services.run_start(run_id=run_id) is None  # already processing: refused quietly


async def test_a_save_that_changes_nothing_emits_nothing(user, token):
    run = await make_run(user, "echo", "echo", started=True, running=0)
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        seq = connected["seq"]
        await sync_to_async(_saves_that_change_nothing)(run.id)
        assert await run_seq(run.id) == seq
        # The next frame is the next real change: nothing came in between.
        await sync_to_async(services.step_succeed)(run_id=run.id, index=0, output=None)
        frame = await receive(ws)
        assert (frame["type"], frame["seq"]) == ("step_succeeded", seq + 1)
    finally:
        await ws.disconnect()


class _Abort(Exception):
    pass


def _start_then_roll_back(run_id):
    with pytest.raises(_Abort), transaction.atomic():
        services.run_start(run_id=run_id)
        services.step_start(run_id=run_id, index=0)
        raise _Abort


async def test_a_rolled_back_transaction_publishes_nothing_and_leaves_no_event(user, token):
    run = await make_run(user, "echo")
    ws, connected = await open_socket(run.id, headers=token_headers(token))
    try:
        assert connected["seq"] == 0
        await sync_to_async(_start_then_roll_back)(run.id)
        assert await run_seq(run.id) == 0
        assert await sync_to_async(RunEvent.objects.filter(run_id=run.id).count)() == 0
        await sync_to_async(services.run_start)(run_id=run.id)
        await sync_to_async(services.step_start)(run_id=run.id, index=0)
        # Whole frames, not (type, seq): a phantom of the rolled-back run_status has
        # those too, but its ts and started_at are the rolled-back ones.
        frames = [await receive(ws), await receive(ws)]
        assert frames == await logged_frames(run.id)
        assert [(f["type"], f["seq"]) for f in frames] == [("run_status", 1), ("step_started", 2)]
    finally:
        await ws.disconnect()


def _admin_cancels(staff_user, run_id):
    client = Client()
    client.force_login(staff_user)
    response = client.post(f"/admin/runs/run/{run_id}/cancel/")
    assert response.status_code == 302, response.content.decode()[:2000]


async def test_an_admin_cancel_is_pushed(user, token, staff_user):
    """The admin's cancel button (its only way to change a run's state) goes through the services."""
    run = await make_run(user, "echo", "echo")
    frames = await verify_action(
        run.id, lambda: _admin_cancels(staff_user, run.id), headers=token_headers(token), count=3
    )
    check_frames(frames, run_id=run.id, first_seq=1)
    assert _kinds(frames) == [("step_skipped", 0), ("step_skipped", 1), "run_completed"]
    assert frames[-1]["payload"]["status"] == "cancelled"
