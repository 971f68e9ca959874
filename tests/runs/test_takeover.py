"""runs.takeover and the step retry: a run whose executor was lost is resumed, the step tried again."""

import pytest

from runs import executor, services, takeover
from runs.models import Run, Step
from runs.tools import StepExecution, tool

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    captured = []
    monkeypatch.setattr("runs.dispatch._send", lambda run_id, **options: captured.append((run_id, options)))
    return captured


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    """One take-over sweep, its dispatches sent (as outside a test's transaction)."""

    def run_sweep():
        with django_capture_on_commit_callbacks(execute=True):
            return takeover.take_over_runs()

    return run_sweep


@pytest.fixture
def no_broker_marker(monkeypatch):
    state = {"lost": False}
    monkeypatch.setattr(takeover, "broker_lost_its_messages", lambda: state["lost"])
    return state


def test_a_processing_run_with_a_free_lease_is_dispatched_again_with_an_expiry(
    sweep, make_run, sent, no_broker_marker, settings
):
    orphan = make_run("processing")
    services.step_start(run_id=orphan.id, index=0)
    make_run("queued")
    make_run("succeeded")

    report = sweep()

    assert report.taken_over == [orphan.id] and report.redispatched == []
    assert sent == [(orphan.id, {"expires": settings.RUNS_TAKEOVER_MESSAGE_EXPIRES})]


def test_a_run_whose_executor_is_alive_is_left_alone(sweep, make_run, sent, no_broker_marker, hold_lease):
    run = make_run("processing")
    hold_lease(run.id)
    assert sweep().taken_over == []
    assert sent == []


def test_queued_runs_are_dispatched_again_when_the_broker_lost_its_messages(
    sweep, make_run, sent, no_broker_marker
):
    first, second = make_run("queued"), make_run("queued")
    assert sweep().redispatched == []
    no_broker_marker["lost"] = True
    assert sweep().redispatched == [first.id, second.id]
    assert sent == [(first.id, {}), (second.id, {})]


@pytest.mark.redis
def test_the_broker_marker_tells_an_emptied_broker(settings):
    import redis

    settings.RUNS_EXECUTOR = "celery"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        client.delete(takeover.BROKER_MARKER_KEY)
        assert takeover.broker_lost_its_messages() is True  # gone: lost (or the first sweep ever)
        assert takeover.broker_lost_its_messages() is False
        client.delete(takeover.BROKER_MARKER_KEY)  # what a restart without persistence does
        assert takeover.broker_lost_its_messages() is True
    finally:
        client.close()


def test_an_orphan_behind_a_run_with_a_live_executor_is_still_taken_over(
    sweep, make_run, sent, no_broker_marker, hold_lease
):
    alive = make_run("processing")  # least recently changed: the sweep meets it first
    orphan = make_run("processing")
    services.step_start(run_id=orphan.id, index=0)
    hold_lease(alive.id)

    assert sweep().taken_over == [orphan.id]
    assert [run_id for run_id, _ in sent] == [orphan.id]


def test_the_sweep_dispatches_a_waiting_run_whose_hand_over_was_lost(
    sweep, make_run, sent, no_broker_marker, settings
):
    settings.RUNS_MAX_INFLIGHT_PER_USER = 1
    first, waiting = make_run("queued"), make_run("queued")
    assert Run.objects.get(pk=waiting.pk).dispatched_at is None  # it waits its turn
    # The first ended without handing over (its process died between the two).
    Run.objects.filter(pk=first.pk).update(status="cancelled")

    report = sweep()

    assert report.released == [waiting.id] and report.taken_over == report.redispatched == []
    assert sent == [(waiting.id, {})]


def test_a_broker_that_lost_its_messages_is_logged_once_with_the_runs_sent_again(
    sweep, make_run, sent, no_broker_marker, caplog
):
    no_broker_marker["lost"] = True
    sweep()  # nothing queued: nothing to say
    assert "lost its messages" not in caplog.text

    make_run("queued"), make_run("queued")
    sweep()
    lines = [r.getMessage() for r in caplog.records if "lost its messages" in r.getMessage()]
    assert lines == ["the broker lost its messages (restarted empty?); dispatched 2 queued run(s) again"]


@pytest.mark.redis
@pytest.mark.parametrize(
    "executor_name, broker_url",
    [("inline", None), ("celery", "amqp://guest@127.0.0.1:5672//"), ("celery", "")],
)
def test_only_a_celery_executor_on_redis_keeps_a_broker_marker(settings, executor_name, broker_url):
    import redis

    redis_url = settings.CELERY_BROKER_URL
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(takeover.BROKER_MARKER_KEY)
        settings.RUNS_EXECUTOR = executor_name
        if broker_url is not None:
            settings.CELERY_BROKER_URL = broker_url
        # No marker to lose there (inline runs have no broker; another broker is not read):
        # never "lost", so queued runs are not all sent again at every sweep.
        assert takeover.broker_lost_its_messages() is False
        assert client.exists(takeover.BROKER_MARKER_KEY) == 0
    finally:
        client.close()


def test_the_interrupted_step_is_executed_again_as_its_next_attempt(make_run, temporary_tools):
    seen: list[StepExecution] = []

    @tool("record_execution_h11")
    def record(*, execution: StepExecution):
        seen.append(execution)
        return {"attempt": execution.attempt}

    run = make_run(steps=[{"tool": "echo", "args": {"n": 0}}, {"tool": "record_execution_h11"}])
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output={"n": 0})
    services.step_start(run_id=run.id, index=1, worker="celery@lost")  # ... and its executor dies here

    assert executor.execute_run(run_id=run.id, worker="celery@taker") == "succeeded"

    run = Run.objects.get(pk=run.id)
    assert run.output == [{"n": 0}, {"attempt": 2}]
    assert list(run.steps.order_by("index").values_list("attempts", "worker")) == [
        (1, ""),
        (2, "celery@taker"),
    ]
    assert [(e.step_index, e.attempt, e.key, e.attempt_id) for e in seen] == [
        (1, 2, f"{run.id}:1", f"{run.id}:1:2")
    ]


def test_a_step_that_kept_losing_its_executor_fails_the_run(make_run, settings):
    settings.RUNS_MAX_STEP_ATTEMPTS = 2
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_retry(run_id=run.id, index=0)  # the second attempt's executor was lost too

    assert executor.execute_run(run_id=run.id) == "failed"

    run = Run.objects.get(pk=run.id)
    assert run.status == "failed"
    assert run.error == "step 1 (echo) failed: its executor was lost during each of its 2 attempts"
    assert Step.objects.get(run=run, index=0).attempts == 2


def test_the_plan_cannot_pass_the_execution_argument(make_run, temporary_tools):
    from runs.tools import PlanError

    @tool("wants_execution_h11", accepts_any_args=True)
    def wants(*, execution, **args):
        return args

    with pytest.raises(PlanError, match="the executor passes it"):
        make_run(steps=[{"tool": "wants_execution_h11", "args": {"execution": 1}}])


def test_a_plain_tool_with_an_execution_argument_in_its_plan_still_runs(make_run):
    run = make_run(steps=[{"tool": "echo", "args": {"execution": "theirs"}}])
    assert executor.execute_run(run_id=run.id) == "succeeded"
    assert Run.objects.get(pk=run.id).output == [{"execution": "theirs"}]


def test_a_retry_after_a_database_error_does_not_count_as_a_lost_executor(make_run, settings):
    # Terminated connections made the task retry three times in one step, which then failed the run.
    settings.RUNS_MAX_STEP_ATTEMPTS = 2
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_retry(run_id=run.id, index=0)

    assert executor.execute_run(run_id=run.id, after_error=True) == "succeeded"
    assert Step.objects.get(run=run, index=0).attempts == 3


def test_the_task_retries_a_database_error_as_after_error(make_run, monkeypatch):
    from celery.exceptions import Retry
    from django.db import OperationalError

    from runs import tasks

    run = make_run()
    calls = []

    def flaky(*, run_id, after_error, worker):
        calls.append(after_error)
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(executor, "execute_run", flaky)
    retried = {}
    monkeypatch.setattr(tasks.execute_run, "retry", lambda **kw: retried.update(kw) or Retry())
    with pytest.raises(Retry):
        tasks.execute_run.run(str(run.id))
    assert calls == [False]
    assert retried["kwargs"] == {"after_error": True} and retried["args"] == (str(run.id),)
