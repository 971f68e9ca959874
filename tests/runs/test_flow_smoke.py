import pytest

from realtime.models import RunEvent
from runs import executor, services
from runs.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_three_echo_steps_succeed_with_events(user, dispatched):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"n": i}} for i in range(3)])
    assert dispatched == [run.id]
    assert executor.execute_run(run_id=run.id) == "succeeded"
    run = Run.objects.get(pk=run.id)
    assert run.status == "succeeded"
    assert run.output == [{"n": 0}, {"n": 1}, {"n": 2}]
    types = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert types == [
        (1, "run_status"),
        (2, "step_started"),
        (3, "step_succeeded"),
        (4, "step_started"),
        (5, "step_succeeded"),
        (6, "step_started"),
        (7, "step_succeeded"),
        (8, "run_completed"),
    ]
    assert run.seq == 8
