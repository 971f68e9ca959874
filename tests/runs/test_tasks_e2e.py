"""End to end: runs executed by a real Celery worker process on Redis.

The runs are created over the API and dispatched for real (no ``dispatched``
fixture), so the message goes through the broker to the worker, which
executes it against the committed test database.
"""

import os
import re
import signal
import time

import pytest
from django.db import connection

from runs import reaper
from runs.models import Run
from tests.processes import celery_beat, celery_worker, subprocess_env
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


def run_in(run_id, *statuses):
    run = Run.objects.filter(pk=run_id).first()
    return run if run is not None and run.status in statuses else None


def step_running(run_id, index):
    return Run.objects.get(pk=run_id).steps.filter(index=index, status="running").exists()


def test_three_echo_steps_over_the_api_succeed_in_order(api, worker_process):
    response = api.post(
        "/api/runs/",
        {"prompt": "three echoes", "steps": [{"tool": "echo", "args": {"n": i}} for i in range(3)]},
        format="json",
    )
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]

    run = wait_for(lambda: run_in(run_id, "succeeded", "failed", "cancelled"), what="the run to finish")

    assert run.status == "succeeded", run.error
    steps = list(run.steps.order_by("index").values_list("index", "tool", "status", "output"))
    assert steps == [(i, "echo", "succeeded", {"n": i}) for i in range(3)]
    assert run.output == [{"n": 0}, {"n": 1}, {"n": 2}]
    detail = api.get(f"/api/runs/{run_id}/").json()
    assert detail["status"] == "succeeded"
    assert [s["index"] for s in detail["steps"]] == [0, 1, 2]


def _sessions_so_far() -> int:
    """PostgreSQL sessions opened on the test database so far (each backend reports its own within
    about a second, or at its exit)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_worker_keeps_its_database_connection_from_task_to_task(api, worker_process):
    # Celery's Django fixup closes every connection around each task unless CELERY_DB_REUSE_MAX
    # is set: each run then opened a session of its own (a backend forked and authenticated).
    plan = {"steps": [{"tool": "echo"}]}
    first = api.post("/api/runs/", plan, format="json").json()["id"]
    wait_for(lambda: run_in(first, "succeeded"), what="the first run")
    before = _sessions_so_far()

    for _ in range(6):
        run_id = api.post("/api/runs/", plan, format="json").json()["id"]
        wait_for(lambda run_id=run_id: run_in(run_id, "succeeded"), what="the run to succeed")
    time.sleep(1.5)  # every session opened meanwhile has been reported by then

    # at most the worker's own, had its first connect not reached the statistics yet
    assert _sessions_so_far() - before <= 1


def test_a_worker_replaces_a_connection_the_database_dropped_between_tasks(api, worker_process):
    # A kept connection is checked before a task uses it (CONN_HEALTH_CHECKS, armed at each task's
    # start): a backend terminated while the worker idled costs the next run nothing, not a retry.
    plan = {"steps": [{"tool": "echo"}]}
    first = api.post("/api/runs/", plan, format="json").json()["id"]
    wait_for(lambda: run_in(first, "succeeded"), what="the first run")
    # The task ends after the run's commit (its lease is released then): the worker must be idle.
    wait_for(lambda: " succeeded in " in worker_process.log(), what="the first task to end")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1  # the worker's

    second = api.post("/api/runs/", plan, format="json").json()["id"]
    run = wait_for(lambda: run_in(second, "succeeded", "failed"), what="the next run")

    assert run.status == "succeeded", run.error
    assert "Retry in" not in worker_process.log() and "OperationalError" not in worker_process.log()


def test_cancel_while_a_step_runs_ends_the_run_cancelled_before_the_next(api, worker_process):
    response = api.post(
        "/api/runs/",
        {"steps": [{"tool": "wait", "args": {"seconds": 3}}, {"tool": "echo"}]},
        format="json",
    )
    run_id = response.json()["id"]
    wait_for(lambda: step_running(run_id, 0), what="step 0 to start")

    cancel = api.post(f"/api/runs/{run_id}/cancel/")
    assert cancel.status_code == 200 and cancel.json()["status"] == "processing"

    run = wait_for(lambda: run_in(run_id, "succeeded", "failed", "cancelled"), what="the run to finish")
    assert run.status == "cancelled"
    assert list(run.steps.order_by("index").values_list("status", flat=True)) == ["succeeded", "skipped"]
    assert api.post(f"/api/runs/{run_id}/cancel/").status_code == 409


def test_pool_process_killed_mid_step_is_redelivered_and_finishes(api, worker_process):
    response = api.post(
        "/api/runs/",
        {"steps": [{"tool": "wait", "args": {"seconds": 3}}, {"tool": "echo", "args": {"after": "wait"}}]},
        format="json",
    )
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    wait_for(lambda: step_running(run_id, 0), what="step 0 to start")
    children = worker_process.child_pids()
    assert len(children) == 1, children

    os.kill(children[0], signal.SIGKILL)

    # acks_late + reject_on_worker_lost requeue the message; the dead child's
    # connection (and advisory lock) is gone, so the redelivery resumes the run.
    run = wait_for(lambda: run_in(run_id, "succeeded", "failed", "cancelled"), what="the run to finish")
    assert run.status == "succeeded", run.error
    assert run.output == [{"waited": 3}, {"after": "wait"}]
    assert worker_process.child_pids() != children  # the pool replaced the killed process
    log = worker_process.log()
    assert "WorkerLostError" in log
    received = re.findall(r"Task runs\.tasks\.execute_run\[([0-9a-f-]+)\] received", log)
    # Delivered, then redelivered after the loss (other ids: leftovers of earlier tests, if any).
    assert max(received.count(task_id) for task_id in received) == 2, log


def test_whole_worker_killed_mid_step_is_taken_over_within_30_seconds(api, settings):
    # Issue 11 #4: the run stayed processing until the reaper failed it (10 minutes),
    # its message coming back only after the visibility timeout (an hour).
    # The sweep every 2 s instead of the default's 10 s: the same take-over, sooner. The
    # default (this process's settings) must leave the 30 s promise a step.
    assert settings.RUNS_TAKEOVER_INTERVAL_SECONDS <= 10
    env = subprocess_env(RUNS_TAKEOVER_INTERVAL_SECONDS="2")
    # Two workers up, as a deploy has them: the one that survives takes the run over. (A worker
    # started after the loss would add its own start-up, which a loaded test machine stretches.)
    with celery_beat(env), celery_worker(env) as one, celery_worker(env) as other:
        response = api.post(
            "/api/runs/",
            {
                "steps": [
                    {"tool": "wait", "args": {"seconds": 3}},
                    {"tool": "echo", "args": {"after": "wait"}},
                ]
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        run_id = response.json()["id"]
        wait_for(lambda: step_running(run_id, 0), what="step 0 to start")
        executing = Run.objects.get(pk=run_id).steps.get(index=0).worker
        lost, survivor = (one, other) if executing == one.node_name else (other, one)
        assert executing == lost.node_name, (executing, one.node_name, other.node_name)
        lost.kill()  # main process and pool: nothing is left to requeue the message
        lost_at = time.monotonic()
        run = wait_for(
            lambda: run_in(run_id, "succeeded", "failed", "cancelled"), timeout=30, what="the take-over"
        )
        taken_over_in = time.monotonic() - lost_at

    assert run.status == "succeeded", run.error
    assert run.output == [{"waited": 3}, {"after": "wait"}]
    assert list(run.steps.order_by("index").values_list("attempts", flat=True)) == [2, 1]
    # Each step names the worker of its last attempt: the one that took the run over.
    assert list(run.steps.values_list("worker", flat=True)) == [survivor.node_name] * 2
    assert taken_over_in < 30


def test_whole_worker_killed_mid_step_is_failed_by_the_reaper_when_nobody_takes_it_over(api):
    with celery_worker() as worker:
        response = api.post(
            "/api/runs/", {"steps": [{"tool": "wait", "args": {"seconds": 30}}]}, format="json"
        )
        assert response.status_code == 201, response.content
        run_id = response.json()["id"]
        wait_for(lambda: step_running(run_id, 0), what="step 0 to start")

        worker.kill()  # main process and pool: nothing is left to requeue the message

    assert Run.objects.get(pk=run_id).status == "processing"

    def reaped():
        reaper.reap_stuck_runs(stale_after=0.5)
        return run_in(run_id, "failed", "succeeded", "cancelled")

    run = wait_for(reaped, what="the reaper to fail the run")
    assert run.status == "failed"
    assert "no progress for more than 0.5 seconds" in run.error
    assert list(run.steps.values_list("status", flat=True)) == ["skipped"]


def test_a_run_ended_elsewhere_mid_step_gets_the_last_word(api, worker_process):
    # Issue 11 #3: the worker's step_succeeded came after another writer's run_completed
    # (an operator's then; the reaper's now, the only writer but the executor that fails a run).
    from realtime.models import RunEvent
    from runs import services

    response = api.post(
        "/api/runs/", {"steps": [{"tool": "wait", "args": {"seconds": 2}}, {"tool": "echo"}]}, format="json"
    )
    run_id = response.json()["id"]
    wait_for(lambda: step_running(run_id, 0), what="step 0 to start")

    services.run_fail(run_id=run_id, error="failed elsewhere")
    ended = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", "type"))
    assert ended[-1][1] == "run_completed"
    # The worker finishes its step after that, and is refused: it logs so and records nothing.
    wait_for(
        lambda: "was finished elsewhere during execution" in worker_process.log(), what="the worker to stop"
    )

    assert list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", "type")) == ended
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.error) == ("failed", "failed elsewhere")
    assert list(run.steps.order_by("index").values_list("status", flat=True)) == ["skipped", "skipped"]
