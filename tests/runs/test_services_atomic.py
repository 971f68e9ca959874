"""Each writer is one transaction of its own: callable outside any (as the executor calls it), all or nothing.

The other service tests run inside the test's own transaction, where a writer
that lost its ``@transaction.atomic`` still works; here the database is in
autocommit, as in a Celery task.
"""

import psycopg
import pytest
from django.db import DatabaseError, connection
from rest_framework.authtoken.models import Token

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
    assert services.run_fail(run_id=fourth.id, error="e").status == "failed"


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


def test_a_token_regeneration_that_fails_to_create_keeps_the_old_key(user, monkeypatch):
    """api_token_regenerate is all or nothing: the old key is not deleted without a new one."""
    old = Token.objects.create(user=user).key

    def refuse(**kwargs):
        raise DatabaseError("refused")

    monkeypatch.setattr(Token.objects, "create", refuse)
    with pytest.raises(DatabaseError):
        services.api_token_regenerate(user=user)
    assert Token.objects.get(user=user).key == old


@pytest.fixture
def run_row_locked():
    """Whether a run's row is locked, seen from a connection of its own (as another writer sees it)."""
    params = connection.settings_dict
    other = psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
    )

    def locked(run_id) -> bool:
        try:
            other.execute(f"SELECT 1 FROM {Run._meta.db_table} WHERE id = %s FOR UPDATE NOWAIT", [run_id])
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            other.rollback()
        return False

    try:
        yield locked
    finally:
        other.close()


WRITERS = {
    "run_start": ("queued", lambda run_id: services.run_start(run_id=run_id)),
    "run_succeed": ("processing", lambda run_id: services.run_succeed(run_id=run_id, output=[])),
    "run_fail": ("processing", lambda run_id: services.run_fail(run_id=run_id, error="e")),
    "run_cancel": ("processing", lambda run_id: services.run_cancel(run_id=run_id)),
    "run_cancel_finish": ("processing", lambda run_id: services.run_cancel_finish(run_id=run_id)),
    "step_start": ("processing", lambda run_id: services.step_start(run_id=run_id, index=0)),
    "step_succeed": (
        "running step",
        lambda run_id: services.step_succeed(run_id=run_id, index=0, output="x"),
    ),
    "step_fail": ("running step", lambda run_id: services.step_fail(run_id=run_id, index=0, error="boom")),
    "step_retry": ("running step", lambda run_id: services.step_retry(run_id=run_id, index=0)),
}


@pytest.mark.postgres
@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_holds_the_runs_row_lock_from_its_check_to_its_commit(
    make_run, monkeypatch, run_row_locked, writer
):
    """Kills: @transaction.atomic removed from a writer (the rows are locked by hand-written SQL,
    which Django does not refuse outside a transaction).

    Without its transaction the writer's ``FOR UPDATE`` ends with its own
    statement: between the status check and the write another writer (an
    operator's cancel, the reaper) could end the run, and a step's change would
    then follow the run's terminal event. Seen from another connection, the
    run's row must stay locked right after the writer has taken it.
    """
    state, call = WRITERS[writer]
    run = make_run("processing" if state == "running step" else state)
    if state == "running step":
        services.step_start(run_id=run.id, index=0)
    seen: list[bool] = []
    for name in ("_locked_run", "_lock_run_reading", "_locked_step"):
        real = getattr(services, name)

        def noting(*args, _real=real, **kwargs):
            taken = _real(*args, **kwargs)
            seen.append(run_row_locked(run.id))
            return taken

        monkeypatch.setattr(services, name, noting)
    call(run.id)
    assert seen and all(seen)
