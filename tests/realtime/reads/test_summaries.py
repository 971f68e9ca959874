"""A run's summary read alone (one hand-written statement, after every change) equals
the same run's line of the list (the annotated queryset), in every state a run goes through."""

import pytest

from realtime.reads import summaries
from runs import services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dispatched")]

PLAN = [{"tool": "echo", "args": {"text": "a"}}, {"tool": "echo", "args": {"text": "b"}}]


def _from_the_list(user, run_id) -> dict:
    (line,) = [s for s in summaries.run_summaries_for_user(user=user) if s["id"] == str(run_id)]
    return line


def _steps(run_id):
    yield "queued", lambda: None
    yield "processing", lambda: services.run_start(run_id=run_id)
    yield "a step running", lambda: services.step_start(run_id=run_id, index=0)
    yield "a step succeeded", lambda: services.step_succeed(run_id=run_id, index=0, output={"x": "é"})
    yield "the next running", lambda: services.step_start(run_id=run_id, index=1)
    yield "cancel asked", lambda: services.run_cancel(run_id=run_id)
    yield "failed, the rest skipped", lambda: services.step_fail(run_id=run_id, index=1, error="boom")


def test_one_runs_summary_is_its_line_of_the_list_in_every_state(user):
    run = services.run_create(owner=user, steps=PLAN, prompt="p" * 300)
    for state, change in _steps(run.id):
        change()
        assert summaries.run_summary(run_id=run.id) == _from_the_list(user, run.id), state
    final = summaries.run_summary(run_id=str(run.id))
    assert (final["status"], final["steps_succeeded"], final["steps_failed"]) == ("failed", 1, 1)
    assert final["cancel_requested"] and final["finished_at"] and len(final["prompt"]) == 200


def test_a_queued_run_cancelled_at_once_and_a_missing_run(user):
    run = services.run_create(owner=user, steps=PLAN[:1])
    services.run_cancel(run_id=run.id)  # queued: cancelled at once, its step created skipped
    assert summaries.run_summary(run_id=run.id) == _from_the_list(user, run.id)
    assert summaries.run_summary(run_id="00000000-0000-0000-0000-000000000000") is None


def test_a_list_snapshot_is_the_newest_100_runs(user):
    # docs/protocol.md: /ws/runs/'s connected frame holds the newest 100 runs' summaries.
    ids = [str(services.run_create(owner=user, steps=PLAN[:1]).id) for _ in range(101)]
    listed = [line["id"] for line in summaries.run_summaries_for_user(user=user)]
    assert len(listed) == 100 and ids[0] not in listed
