"""runs.services: every legal and illegal transition, and cancel semantics."""

import itertools

import pytest

from runs import executor, services
from runs.models import Run, RunStatus, Step, StepStatus
from runs.services import RUN_TRANSITIONS, STEP_TRANSITIONS, TransitionError

pytestmark = pytest.mark.django_db

RUN_PAIRS = list(itertools.product(RunStatus.values, RunStatus.values))
STEP_PAIRS = list(itertools.product(StepStatus.values, StepStatus.values))
# The transitions the product allows (docs/protocol.md), written out here rather
# than read from the tables under test: a wrong entry in a table must fail a test.
LEGAL_RUN = [
    ("queued", "processing"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("processing", "succeeded"),
    ("processing", "failed"),
    ("processing", "cancelled"),
]
LEGAL_STEP = [
    ("pending", "running"),
    ("pending", "skipped"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "skipped"),
]
ILLEGAL_RUN = [pair for pair in RUN_PAIRS if pair not in LEGAL_RUN]
ILLEGAL_STEP = [pair for pair in STEP_PAIRS if pair not in LEGAL_STEP]


def _refusal(check, current: str, requested: str) -> TransitionError | None:
    try:
        check(current, requested)
    except TransitionError as error:
        return error
    return None


def test_tables_cover_every_status_and_terminal_states_are_final():
    assert set(RUN_TRANSITIONS) == set(RunStatus.values)
    assert set(STEP_TRANSITIONS) == set(StepStatus.values)
    for status in ("succeeded", "failed", "cancelled"):
        assert RUN_TRANSITIONS[status] == frozenset()
    assert ("succeeded", "processing") in ILLEGAL_RUN


@pytest.mark.parametrize(("current", "requested"), LEGAL_RUN)
def test_check_run_transition_allows_legal(current, requested):
    assert _refusal(services.check_run_transition, current, requested) is None
    assert requested in RUN_TRANSITIONS[current]


@pytest.mark.parametrize(("current", "requested"), ILLEGAL_RUN)
def test_check_run_transition_refuses_illegal(current, requested):
    with pytest.raises(TransitionError) as caught:
        services.check_run_transition(current, requested)
    assert caught.value.message == f"a run cannot go from {current} to {requested}"
    assert (caught.value.current, caught.value.requested) == (current, requested)


@pytest.mark.parametrize(("current", "requested"), LEGAL_STEP)
def test_check_step_transition_allows_legal(current, requested):
    assert _refusal(services.check_step_transition, current, requested) is None
    assert requested in STEP_TRANSITIONS[current]


@pytest.mark.parametrize(("current", "requested"), ILLEGAL_STEP)
def test_check_step_transition_refuses_illegal(current, requested):
    with pytest.raises(TransitionError, match=f"a step cannot go from {current} to {requested}"):
        services.check_step_transition(current, requested)


# --- The writers apply the same table ---------------------------------------------


def test_run_start_only_starts_a_queued_run(make_run):
    run = make_run("queued")
    started = services.run_start(run_id=run.id)
    assert started.status == "processing" and started.started_at is not None
    assert services.run_start(run_id=run.id) is None
    assert Run.objects.get(pk=run.id).status == "processing"


@pytest.mark.parametrize("status", ["queued", "succeeded", "failed", "cancelled"])
def test_run_succeed_needs_processing(make_run, status):
    run = make_run(status)
    with pytest.raises(TransitionError):
        services.run_succeed(run_id=run.id, output=[])
    assert Run.objects.get(pk=run.id).status == status


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_run_fail_refuses_a_finished_run(make_run, status):
    run = make_run(status)
    with pytest.raises(TransitionError):
        services.run_fail(run_id=run.id, error="late")
    assert Run.objects.get(pk=run.id).status == status


def test_run_fail_skips_every_open_step_in_plan_order(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output="ok")
    services.step_start(run_id=run.id, index=1)
    services.run_fail(run_id=run.id, error="lost")
    run = Run.objects.get(pk=run.id)
    assert (run.status, run.error) == ("failed", "lost")
    assert list(run.steps.order_by("index").values_list("index", "status")) == [
        (0, "succeeded"),
        (1, "skipped"),
        (2, "skipped"),
    ]


# --- Steps --------------------------------------------------------------------------


def test_step_lifecycle_running_then_succeeded(make_run):
    run = make_run("processing")
    step = services.step_start(run_id=run.id, index=1)
    assert (step.index, step.tool, step.args, step.status) == (1, "echo", {"n": 1}, "running")
    assert step.started_at is not None
    step = services.step_succeed(run_id=run.id, index=1, output={"n": 1})
    assert (step.status, step.output) == ("succeeded", {"n": 1})
    assert step.finished_at is not None


@pytest.mark.parametrize("status", ["queued", "succeeded", "failed", "cancelled"])
def test_step_start_needs_a_processing_run(make_run, status):
    run = make_run(status)
    count = run.steps.count()
    with pytest.raises(TransitionError, match=f"a step cannot become running while the run is {status}"):
        services.step_start(run_id=run.id, index=0)
    assert run.steps.count() == count


def test_step_fail_fails_the_run_and_skips_the_rest(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_fail(run_id=run.id, index=0, error="boom")
    run = Run.objects.get(pk=run.id)
    assert run.status == "failed"
    assert run.error == "step 1 (echo) failed: boom"
    assert list(run.steps.order_by("index").values_list("status", "error")) == [
        ("failed", "boom"),
        ("skipped", ""),
        ("skipped", ""),
    ]


@pytest.mark.parametrize("finish", ["succeed", "fail"])
def test_a_finished_step_cannot_finish_again(make_run, finish):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output=1)
    with pytest.raises(TransitionError, match="a step cannot go from succeeded to"):
        if finish == "succeed":
            services.step_succeed(run_id=run.id, index=0, output=2)
        else:
            services.step_fail(run_id=run.id, index=0, error="late")
    step = Step.objects.get(run=run, index=0)
    assert (step.status, step.output) == ("succeeded", 1)
    assert Run.objects.get(pk=run.id).status == "processing"


ENDS_ELSEWHERE = {
    # By the reaper (runs/reaper.py): a lost worker's run failed, or its owner's cancel honoured.
    "failed": lambda run_id: services.run_fail(run_id=run_id, error="reaped"),
    "cancelled": lambda run_id: (
        services.run_cancel(run_id=run_id),
        services.run_cancel_finish(run_id=run_id),
    ),
}


@pytest.mark.parametrize("ended", ENDS_ELSEWHERE)
@pytest.mark.parametrize("finish", ["succeed", "fail"])
def test_a_step_finishing_after_its_run_ended_elsewhere_changes_and_emits_nothing(make_run, ended, finish):
    from realtime.models import RunEvent

    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    ENDS_ELSEWHERE[ended](run.id)
    log = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert log[-1][1] == "run_completed"

    with pytest.raises(TransitionError, match=f"while the run is {ended}"):
        if finish == "succeed":
            services.step_succeed(run_id=run.id, index=0, output={"late": True})
        else:
            services.step_fail(run_id=run.id, index=0, error="late")

    assert list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type")) == log
    assert list(Run.objects.get(pk=run.id).steps.values_list("status", flat=True)) == ["skipped"] * 3


def test_no_writer_changes_a_finished_run_or_its_steps(make_run):
    from realtime.models import RunEvent

    run = make_run("succeeded")
    seq = Run.objects.get(pk=run.id).seq
    attempts = [
        lambda: services.run_succeed(run_id=run.id, output=[]),
        lambda: services.run_fail(run_id=run.id, error="late"),
        lambda: services.run_cancel(run_id=run.id),
        lambda: services.run_cancel_finish(run_id=run.id),
        lambda: services.step_start(run_id=run.id, index=0),
        lambda: services.step_succeed(run_id=run.id, index=0, output=1),
        lambda: services.step_fail(run_id=run.id, index=0, error="late"),
    ]
    for attempt in attempts:
        with pytest.raises(TransitionError):
            attempt()
    assert services.run_start(run_id=run.id) is None
    assert Run.objects.get(pk=run.id).seq == seq
    assert RunEvent.objects.filter(run=run, seq__gt=seq).count() == 0


# --- Cancel -------------------------------------------------------------------------


def test_cancel_a_queued_run_at_once_with_every_step_skipped(make_run):
    run = make_run("queued")
    services.run_cancel(run_id=run.id)
    run = Run.objects.get(pk=run.id)
    assert run.status == "cancelled" and run.finished_at is not None
    assert list(run.steps.order_by("index").values_list("index", "status")) == [
        (0, "skipped"),
        (1, "skipped"),
        (2, "skipped"),
    ]
    # A late delivery of its task does nothing.
    assert executor.execute_run(run_id=run.id) == "finished"


def test_cancel_a_processing_run_asks_then_the_executor_ends_it_before_the_next_step(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output={"n": 0})

    services.run_cancel(run_id=run.id)
    asked = Run.objects.get(pk=run.id)
    assert asked.status == "processing" and asked.cancel_requested_at is not None
    # Asking twice keeps the first request.
    services.run_cancel(run_id=run.id)
    assert Run.objects.get(pk=run.id).cancel_requested_at == asked.cancel_requested_at

    assert executor.execute_run(run_id=run.id) == "cancelled"
    run = Run.objects.get(pk=run.id)
    assert run.status == "cancelled" and run.finished_at is not None
    assert list(run.steps.order_by("index").values_list("status", flat=True)) == [
        "succeeded",
        "skipped",
        "skipped",
    ]


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_run_is_refused(make_run, status):
    run = make_run(status)
    with pytest.raises(TransitionError, match=f"the run has already {status}; it cannot be cancelled"):
        services.run_cancel(run_id=run.id)
    assert Run.objects.get(pk=run.id).status == status


def test_run_cancel_finish_refuses_a_finished_run(make_run):
    run = make_run("succeeded")
    with pytest.raises(TransitionError):
        services.run_cancel_finish(run_id=run.id)


# --- Creation -----------------------------------------------------------------------


def test_run_create_validates_normalises_and_dispatches_after_commit(
    user, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr("runs.dispatch._send", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        run = services.run_create(owner=user, steps=[{"tool": "fail"}], prompt="p")
        assert sent == []  # not before the commit
    assert sent == [run.id]
    run = Run.objects.get(pk=run.id)
    assert (run.status, run.prompt, run.seq) == ("queued", "p", 0)
    assert run.plan == [{"tool": "fail", "args": {"message": "failed on purpose"}}]
    assert run.steps.count() == 0


def test_run_rerun_copies_prompt_and_plan(make_run, other_user):
    old = make_run("failed", prompt="again")
    new = services.run_rerun(run=old, owner=other_user)
    assert new.id != old.id
    assert (new.status, new.prompt, new.plan, new.owner) == ("queued", "again", old.plan, other_user)
