"""Each writer is one transaction of its own: callable outside any (as the executor calls it), all or nothing.

The other service tests run inside the test's own transaction, where a writer
that lost its ``@transaction.atomic`` still works; here the database is in
autocommit, as in a Celery task.
"""

import pytest

from runs import services
from runs.models import Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_writer_runs_outside_a_transaction(make_run):
    """Kills: @transaction.atomic removed from a writer (select_for_update needs one)."""
    run = make_run("queued")
    assert services.run_start(run_id=run.id).status == "processing"
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output="x")
    services.step_start(run_id=run.id, index=1)
    services.step_fail(run_id=run.id, index=1, error="boom")
    assert Run.objects.get(pk=run.id).status == "failed"

    other = make_run("processing")
    services.run_cancel(run_id=other.id)
    assert services.run_cancel_finish(run_id=other.id).status == "cancelled"
    third = make_run("processing")
    assert services.run_succeed(run_id=third.id, output=[]).status == "succeeded"
    fourth = make_run("queued")
    assert services.run_set_status(run_id=fourth.id, status="failed").status == "failed"
    fifth = make_run("queued")
    assert services.run_fail(run_id=fifth.id, error="e").status == "failed"


def test_a_step_failure_whose_run_cannot_fail_changes_nothing(make_run, monkeypatch):
    """step_fail is all or nothing: the step is not left failed under a run still processing."""
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    seq = Run.objects.get(pk=run.id).seq

    def refuse(**kwargs):
        raise services.TransitionError("refused", current="processing", requested="failed")

    monkeypatch.setattr(services, "run_fail", refuse)
    with pytest.raises(services.TransitionError):
        services.step_fail(run_id=run.id, index=0, error="boom")
    assert Step.objects.get(run_id=run.id, index=0).status == "running"
    assert Run.objects.get(pk=run.id).seq == seq  # and no event was logged
