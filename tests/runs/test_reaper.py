"""runs.reaper and `manage.py reap_runs`: no run stays processing (or queued) forever."""

from io import StringIO

import pytest
from django.core.management import call_command

from runs import reaper, services, tasks
from runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch, django_capture_on_commit_callbacks):
    captured = []
    monkeypatch.setattr("runs.dispatch._send", captured.append)
    return captured


def test_a_stale_processing_run_with_a_free_lease_is_failed(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)

    report = reaper.reap_stuck_runs(stale_after=0)

    assert report.failed == [run.id]
    run = Run.objects.get(pk=run.id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "no progress for more than 0 seconds; the worker executing it was lost"
    assert list(run.steps.order_by("index").values_list("status", flat=True)) == ["skipped"] * 3


def test_a_stale_run_whose_cancel_was_requested_is_cancelled_not_failed(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.run_cancel(run_id=run.id)  # asked, but its executor is gone

    report = reaper.reap_stuck_runs(stale_after=0)

    assert (report.failed, report.cancelled) == ([], [run.id])
    run = Run.objects.get(pk=run.id)
    assert (run.status, run.error) == ("cancelled", "")
    assert list(run.steps.values_list("status", flat=True)) == ["skipped"] * 3
    out = StringIO()
    call_command("reap_runs", "--stale-after", "0", stdout=out)
    assert out.getvalue().strip() == "failed 0 stuck run(s), re-dispatched 0 queued run(s)"


def test_reap_runs_command_reports_cancelled_runs(make_run):
    run = make_run("processing")
    services.run_cancel(run_id=run.id)
    out = StringIO()
    call_command("reap_runs", "--stale-after", "0", stdout=out)
    assert out.getvalue().strip() == (
        "failed 0 stuck run(s), re-dispatched 0 queued run(s), "
        "cancelled 1 stuck run(s) whose cancel was requested"
    )


def test_a_stale_processing_run_whose_lease_is_held_is_left_alone(make_run, hold_lease):
    run = make_run("processing")
    hold_lease(run.id)  # a live executor, merely slow
    report = reaper.reap_stuck_runs(stale_after=0)
    assert report.failed == []
    assert Run.objects.get(pk=run.id).status == "processing"


def test_a_processing_run_with_recent_progress_is_left_alone(make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    assert reaper.reap_stuck_runs().failed == []  # the default: ten minutes
    assert Run.objects.get(pk=run.id).status == "processing"


def test_the_default_stale_after_is_ten_minutes(settings):
    assert settings.RUNS_STALE_AFTER_SECONDS == 600


def test_finished_runs_are_not_touched(make_run, sent, django_capture_on_commit_callbacks):
    for status in ("succeeded", "failed", "cancelled"):
        make_run(status)
    before = list(Run.objects.order_by("pk").values())
    assert sorted(run["status"] for run in before) == ["cancelled", "failed", "succeeded"]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        report = reaper.reap_stuck_runs(stale_after=0)
    assert (report.failed, report.redispatched, report.cancelled) == ([], [], [])
    assert list(Run.objects.order_by("pk").values()) == before  # seq too: no event logged
    assert (callbacks, sent) == ([], [])  # nothing published, nothing enqueued


def test_a_stale_queued_run_is_dispatched_again(make_run, sent, django_capture_on_commit_callbacks):
    run = make_run("queued")
    fresh_sent = len(sent)
    with django_capture_on_commit_callbacks(execute=True):
        report = reaper.reap_stuck_runs(stale_after=0)
    assert report.redispatched == [run.id]
    assert sent[fresh_sent:] == [run.id]
    assert Run.objects.get(pk=run.id).status == "queued"


def test_a_recent_queued_run_is_not_dispatched_again(make_run, sent, django_capture_on_commit_callbacks):
    make_run("queued")
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap_stuck_runs().redispatched == []
    assert sent == []


def test_reap_runs_command(make_run):
    make_run("processing")
    make_run("queued")
    out = StringIO()
    call_command("reap_runs", "--stale-after", "0", stdout=out)
    assert out.getvalue().strip() == "failed 1 stuck run(s), re-dispatched 1 queued run(s)"
    assert sorted(Run.objects.values_list("status", flat=True)) == ["failed", "queued"]


def test_reap_runs_command_uses_the_setting_by_default(make_run, settings):
    make_run("processing")
    out = StringIO()
    call_command("reap_runs", stdout=out)
    assert out.getvalue().strip() == "failed 0 stuck run(s), re-dispatched 0 queued run(s)"
    settings.RUNS_STALE_AFTER_SECONDS = 0
    call_command("reap_runs", stdout=out)
    assert "failed 1 stuck run(s)" in out.getvalue()


def test_beat_task_reports_counts(make_run, settings):
    make_run("processing")
    settings.RUNS_STALE_AFTER_SECONDS = 0
    assert tasks.reap_stuck_runs.run() == {"failed": 1, "redispatched": 0, "cancelled": 0}


def test_beat_schedule_runs_the_reaper(settings):
    assert settings.CELERY_BEAT_SCHEDULE["reap-stuck-runs"]["task"] == "runs.tasks.reap_stuck_runs"
