"""A task delivered again after its run has ended calls no tool (acks_late redelivers after a crash)."""

import pytest

from runs import services, tasks
from runs.models import Run
from runs.tools import tool

pytestmark = pytest.mark.django_db


@pytest.fixture
def tool_calls(temporary_tools) -> list[dict]:
    """A tool ``counted_h15`` that records each call (a side effect a user would see twice)."""
    calls: list[dict] = []

    @tool("counted_h15", accepts_any_args=True)
    def counted(**args):
        calls.append(args)
        return "called"

    return calls


def _ended(how: str, user) -> Run:
    """A run of two ``counted_h15`` steps, ended in one of the ways a run ends early."""
    run = services.run_create(owner=user, steps=[{"tool": "counted_h15", "args": {"n": i}} for i in range(2)])
    if how == "cancelled while queued":
        services.run_cancel(run_id=run.id)
        return Run.objects.get(pk=run.id)
    services.run_start(run_id=run.id)
    services.step_start(run_id=run.id, index=0)
    if how == "failed mid-step":  # the reaper, after its worker died
        services.run_fail(run_id=run.id, error="the worker executing it was lost")
    else:  # "cancelled mid-step": the executor saw the request before its next step
        services.run_cancel(run_id=run.id)
        services.run_cancel_finish(run_id=run.id)
    return Run.objects.get(pk=run.id)


@pytest.mark.parametrize("how", ["failed mid-step", "cancelled mid-step", "cancelled while queued"])
def test_a_redelivered_task_of_an_ended_run_calls_no_tool(user, tool_calls, how):
    """Kills: the executor's early return for a terminal run removed (the first and last case)."""
    run = _ended(how, user)
    before = Run.objects.filter(pk=run.id).values().get()
    steps_before = list(run.steps.order_by("index").values("index", "status", "output", "error"))
    assert [s["status"] for s in steps_before] == ["skipped", "skipped"]

    assert tasks.execute_run.apply(args=[str(run.id)]).get() == "finished"

    assert tool_calls == []
    assert Run.objects.filter(pk=run.id).values().get() == before  # seq too: no event
    assert list(run.steps.order_by("index").values("index", "status", "output", "error")) == steps_before
