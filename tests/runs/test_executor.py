"""runs.executor: idempotent, lease-guarded, resumable execution of a plan."""

import pytest

from runs import executor, services, tasks
from runs.models import Run
from runs.tools import tool

pytestmark = pytest.mark.django_db


def statuses(run_id):
    return list(Run.objects.get(pk=run_id).steps.order_by("index").values_list("status", flat=True))


def test_executes_every_step_in_order(make_run):
    run = make_run()
    assert executor.execute_run(run_id=run.id) == "succeeded"
    run = Run.objects.get(pk=run.id)
    assert run.status == "succeeded" and run.started_at and run.finished_at
    assert run.output == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert list(run.steps.order_by("index").values_list("index", "tool", "status", "output")) == [
        (i, "echo", "succeeded", {"n": i}) for i in range(3)
    ]


def test_each_step_names_the_worker_that_executes_it(make_run):
    run = make_run()
    assert executor.execute_run(run_id=run.id, worker="celery@host-a") == "succeeded"
    workers = Run.objects.get(pk=run.id).steps.values_list("worker", flat=True)
    assert list(workers) == ["celery@host-a"] * 3


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_run_is_left_alone(make_run, status):
    run = make_run(status)
    before = Run.objects.filter(pk=run.id).values().get()
    steps_before = list(Run.objects.get(pk=run.id).steps.values())
    assert executor.execute_run(run_id=run.id) == "finished"
    assert Run.objects.filter(pk=run.id).values().get() == before
    assert list(Run.objects.get(pk=run.id).steps.values()) == steps_before


def test_second_execution_of_a_finished_run_does_nothing(make_run):
    run = make_run()
    assert executor.execute_run(run_id=run.id) == "succeeded"
    seq = Run.objects.get(pk=run.id).seq
    assert executor.execute_run(run_id=run.id) == "finished"
    assert Run.objects.get(pk=run.id).seq == seq  # no new events either
    assert Run.objects.get(pk=run.id).steps.count() == 3


def test_busy_while_another_executor_holds_the_lease(make_run, hold_lease):
    run = make_run()
    hold_lease(run.id)
    assert executor.execute_run(run_id=run.id) == "busy"
    run = Run.objects.get(pk=run.id)
    assert run.status == "queued" and run.steps.count() == 0


def test_the_lease_is_released_after_execution(make_run):
    run = make_run()
    executor.execute_run(run_id=run.id)
    other = make_run()
    # Same connection again, and the lock is free: a leaked lease would make this "busy".
    from runs.leases import run_lease

    with run_lease(run.id) as acquired:
        assert acquired
    assert executor.execute_run(run_id=other.id) == "succeeded"


def test_a_missing_run(db):
    import uuid

    assert executor.execute_run(run_id=uuid.uuid4()) == "missing"


def test_a_failing_step_fails_the_run_and_skips_the_rest(make_run):
    run = make_run(
        steps=[
            {"tool": "echo", "args": {"a": 1}},
            {"tool": "fail", "args": {"message": "boom"}},
            {"tool": "echo"},
        ]
    )
    assert executor.execute_run(run_id=run.id) == "failed"
    run = Run.objects.get(pk=run.id)
    assert run.status == "failed"
    assert run.error == "step 2 (fail) failed: boom"
    assert run.finished_at is not None and run.output is None
    assert list(run.steps.order_by("index").values_list("status", "error")) == [
        ("succeeded", ""),
        ("failed", "boom"),
        ("skipped", ""),
    ]


def test_a_tool_crash_is_described_with_its_type(make_run, temporary_tools):
    @tool("crash_h1", accepts_any_args=True)
    def crash(**args):
        raise KeyError("missing")

    run = make_run(steps=[{"tool": "crash_h1"}])
    assert executor.execute_run(run_id=run.id) == "failed"
    assert Run.objects.get(pk=run.id).error == "step 1 (crash_h1) failed: KeyError: 'missing'"


def test_output_json_cannot_hold_fails_the_step_not_the_save(make_run, temporary_tools):
    tool("object_h1")(lambda: object())
    run = make_run(steps=[{"tool": "object_h1"}, {"tool": "echo"}])
    assert executor.execute_run(run_id=run.id) == "failed"
    assert "TypeError" in Run.objects.get(pk=run.id).error
    assert statuses(run.id) == ["failed", "skipped"]


def test_a_tool_unregistered_after_creation_fails_the_step(make_run, temporary_tools):
    tool("gone_h1")(lambda: 1)
    run = make_run(steps=[{"tool": "gone_h1"}])
    from runs.tools import registry

    del registry._registry["gone_h1"]
    assert executor.execute_run(run_id=run.id) == "failed"
    assert "tool 'gone_h1' is no longer registered" in Run.objects.get(pk=run.id).error


def test_a_resumed_run_keeps_finished_steps_and_reruns_the_interrupted_one(make_run):
    # An executor died after step 0 succeeded, during step 1.
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output="kept")
    services.step_start(run_id=run.id, index=1)

    assert executor.execute_run(run_id=run.id) == "succeeded"
    run = Run.objects.get(pk=run.id)
    assert run.status == "succeeded"
    assert run.output == ["kept", {"n": 1}, {"n": 2}]
    assert statuses(run.id) == ["succeeded"] * 3


@pytest.fixture
def run_acting_on_itself(make_run, temporary_tools):
    """A run whose step 1 calls ``action(run_id)`` on the run itself, mid-step."""

    def make(action):
        target = {}

        @tool("act_h1")
        def act():
            action(target["id"])
            return "acted"

        run = make_run(steps=[{"tool": "echo"}, {"tool": "act_h1"}, {"tool": "echo"}])
        target["id"] = run.id
        return run

    return make


def test_cancel_requested_during_a_step_stops_before_the_next(run_acting_on_itself):
    run = run_acting_on_itself(lambda run_id: services.run_cancel(run_id=run_id))
    assert executor.execute_run(run_id=run.id) == "cancelled"
    run = Run.objects.get(pk=run.id)
    assert run.status == "cancelled" and run.cancel_requested_at is not None
    # The step that was running finished; the next one never started.
    assert statuses(run.id) == ["succeeded", "succeeded", "skipped"]


def test_a_run_finished_elsewhere_during_a_step_is_left_as_it_is(run_acting_on_itself):
    run = run_acting_on_itself(lambda run_id: services.run_fail(run_id=run_id, error="reaped elsewhere"))
    assert executor.execute_run(run_id=run.id) == "finished"
    run = Run.objects.get(pk=run.id)
    assert (run.status, run.error) == ("failed", "reaped elsewhere")
    assert statuses(run.id) == ["succeeded", "skipped", "skipped"]


# --- The Celery tasks are thin wrappers --------------------------------------------------


def test_execute_run_task_runs_the_executor(make_run):
    run = make_run()
    assert tasks.execute_run.run(str(run.id)) == "succeeded"
    assert tasks.execute_run.run(str(run.id)) == "finished"


def test_execute_run_task_passes_its_worker_s_hostname(make_run, monkeypatch):
    run = make_run()
    monkeypatch.setattr(tasks.execute_run.request, "hostname", "celery@host-a", raising=False)
    assert tasks.execute_run.run(str(run.id)) == "succeeded"
    assert set(Run.objects.get(pk=run.id).steps.values_list("worker", flat=True)) == {"celery@host-a"}


def test_execute_run_task_refuses_a_malformed_id(db):
    assert tasks.execute_run.run("not-a-uuid") == "malformed"


def test_execute_run_task_looks_again_when_the_lease_is_busy(make_run, hold_lease, monkeypatch):
    run = make_run()
    hold_lease(run.id)
    calls = []
    real = tasks.executor.execute_run
    monkeypatch.setattr(
        tasks.executor,
        "execute_run",
        lambda run_id, after_error, worker: (
            calls.append(run_id) or real(run_id=run_id, after_error=after_error, worker=worker)
        ),
    )

    result = tasks.execute_run.apply(args=[str(run.id)])

    # Eagerly, each retry runs at once: the first try and BUSY_RETRIES more, then it gives up.
    assert calls == [run.id] * (1 + tasks.BUSY_RETRIES)
    assert result.get() == "busy"
    assert Run.objects.get(pk=run.id).status == "queued"


def test_execute_run_task_is_late_acked_and_rejected_on_worker_loss():
    assert tasks.execute_run.acks_late is True
    assert tasks.execute_run.reject_on_worker_lost is True
