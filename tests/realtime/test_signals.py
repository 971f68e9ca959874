"""The receivers are connected once (dispatch_uid), whatever imports or ready() calls happen."""

from types import SimpleNamespace

import pytest

from realtime import signals
from realtime.models import RunEvent
from runs import services

pytestmark = [pytest.mark.django_db]


def test_connecting_again_does_not_double_the_events(user, dispatched):
    signals.connect()
    signals.connect()
    run = services.run_create(owner=user, steps=[{"tool": "echo"}])
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    assert list(RunEvent.objects.filter(run=run).values_list("seq", "type")) == [
        (1, "run_status"),
        (2, "step_started"),
    ]


def test_loaddata_records_no_events(user, dispatched):
    from django.core import serializers

    run = services.run_create(owner=user, steps=[{"tool": "echo"}, {"tool": "echo"}])
    services.run_fail(run_id=run.id, error="x")  # 2 step_skipped + run_completed
    dumped = serializers.serialize("json", [run.__class__.objects.get(pk=run.id), *run.steps.all()])
    run.__class__.objects.filter(pk=run.id).delete()  # steps and events go with it
    for obj in serializers.deserialize("json", dumped):
        obj.save()  # a raw save, as loaddata does
    assert run.steps.count() == 2
    assert RunEvent.objects.filter(run=run).count() == 0


def test_each_change_that_records_an_event_notes_its_run_for_the_run_lists(user, dispatched, monkeypatch):
    """A new run and each event-making change move the run's line; a save that makes no event does not.

    Red with signals.py's ``record_run_change(...) is not None`` or
    ``record_step_change(...) is not None`` inverted, or the step check negated:
    the run lists then got no pushed line for that change (the list poller's
    re-read brought it up to REALTIME_LIST_REFRESH_INTERVAL later).
    """
    noted = []
    monkeypatch.setattr(signals.list_feed, "note_change", lambda *, run_id: noted.append(run_id))
    run = services.run_create(owner=user, steps=[{"tool": "echo"}])
    assert noted == [run.id]
    services.run_start(run_id=run.id)
    assert noted == [run.id] * 2
    services.step_start(run_id=run.id, index=0)
    assert noted == [run.id] * 3
    step = run.steps.get(index=0)
    step.save()  # no status change: no event, no new line
    run.__class__.objects.get(pk=run.id).save()
    assert noted == [run.id] * 3


def test_a_worker_is_named_by_its_hostname(monkeypatch):
    named = []
    monkeypatch.setattr(signals.record, "worker_started", lambda *, name: named.append(name))
    monkeypatch.setattr(signals.reporter, "start", lambda *args, **kwargs: None)
    signals.worker_started(sender=SimpleNamespace(hostname="celery@host-1"))
    signals.worker_started(sender=None)
    assert named == ["celery@host-1", "worker"]
