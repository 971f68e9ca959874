"""The receivers are connected once (dispatch_uid), whatever imports or ready() calls happen."""

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
