"""Retention: the prune_run_events task and command delete events older than the setting."""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime import tasks
from realtime.events import retention
from realtime.models import RunEvent
from runs import executor, services

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def run(user, dispatched):
    """A finished run of two steps: six events, aged 0..5 days (seq 1 the oldest)."""
    run = services.run_create(owner=user, steps=[{"tool": "echo"}, {"tool": "echo"}])
    executor.execute_run(run_id=run.id)
    now = timezone.now()
    for seq in range(1, 7):
        RunEvent.objects.filter(run=run, seq=seq).update(ts=now - timedelta(days=6 - seq, hours=1))
    return run


def _seqs(run):
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))


def test_the_task_prunes_by_the_setting(run, settings):
    settings.REALTIME_EVENT_RETENTION_DAYS = 3
    assert tasks.prune_run_events() == 3  # 5, 4 and 3 days (and an hour) old
    assert _seqs(run) == [4, 5, 6]
    assert tasks.prune_run_events() == 0


def test_a_prune_logs_what_it_deleted_and_nothing_when_it_deleted_nothing(run, settings, caplog):
    settings.REALTIME_EVENT_RETENTION_DAYS = 3
    with caplog.at_level(logging.INFO, logger="realtime.events.retention"):
        tasks.prune_run_events()
        tasks.prune_run_events()
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.events.retention"]
    assert lines == ["pruned 3 run event(s) older than 3 day(s)"]


@pytest.mark.parametrize("days", [-1, -0.5])
def test_a_negative_retention_period_is_refused_and_deletes_nothing(run, settings, days):
    # A negative setting puts the cutoff in the future: every event, a live run's too, would go.
    settings.REALTIME_EVENT_RETENTION_DAYS = days
    with pytest.raises(ValueError, match="cannot be negative"):
        tasks.prune_run_events()
    assert _seqs(run) == [1, 2, 3, 4, 5, 6]


def test_the_default_retention_is_seven_days(run, settings):
    assert settings.REALTIME_EVENT_RETENTION_DAYS == 7
    assert retention.prune_run_events() == 0
    assert _seqs(run) == [1, 2, 3, 4, 5, 6]


def test_the_task_is_the_one_beat_schedules(settings):
    from quikday.celery import app

    assert settings.CELERY_BEAT_SCHEDULE["prune-run-events"]["task"] == "realtime.tasks.prune_run_events"
    app.loader.import_default_modules()
    assert "realtime.tasks.prune_run_events" in app.tasks


def test_the_command_with_days(run):
    out = StringIO()
    call_command("prune_run_events", "--days", "1.5", stdout=out)
    assert out.getvalue().strip() == "deleted 4 run event(s)"
    assert _seqs(run) == [5, 6]
    call_command("prune_run_events", "--days", "0", stdout=out)
    assert _seqs(run) == []
    # The run itself, and its snapshot's seq, stay.
    run.refresh_from_db()
    assert (run.status, run.seq) == ("succeeded", 6)


def test_the_command_uses_the_setting_by_default(run, settings):
    settings.REALTIME_EVENT_RETENTION_DAYS = 4.5
    out = StringIO()
    call_command("prune_run_events", stdout=out)
    assert out.getvalue().strip() == "deleted 1 run event(s)"


@pytest.mark.parametrize("days", ["-1", "nan"])
def test_the_command_refuses_a_bad_days(run, days):
    with pytest.raises(CommandError):
        call_command("prune_run_events", "--days", days)
    assert len(_seqs(run)) == 6


def test_pruning_goes_in_batches(run):
    assert retention.prune_run_events(days=0, batch_size=4) == 6
    assert _seqs(run) == []


def _statements(queries) -> tuple[int, int]:
    kinds = [q["sql"].split()[0] for q in queries.captured_queries]
    return kinds.count("SELECT"), kinds.count("DELETE")


def test_a_prune_deletes_at_most_5000_events_a_statement_and_stops_at_a_short_batch(run):
    # The bound that keeps one prune from holding a huge transaction or lock set.
    # 5,000 events past the retention (the run's own six are younger): one full
    # batch (one DELETE), then a read that finds none.
    old = timezone.now() - timedelta(days=30)
    RunEvent.objects.bulk_create(
        RunEvent(run=run, seq=seq, type="step.log", payload={}, ts=old) for seq in range(7, 7 + 5000)
    )
    with CaptureQueriesContext(connection) as queries:
        assert retention.prune_run_events() == 5000
    assert _statements(queries) == (2, 1)
    # A batch shorter than 5,000 is the last: no read after it.
    with CaptureQueriesContext(connection) as queries:
        assert retention.prune_run_events(days=2) == 4
    assert _statements(queries) == (1, 1)
