"""Fair execution (issue 21 #5): one user's backlog does not hold up another user's runs.

Before, runs went to the broker's one FIFO queue at their create: a user with
a backlog of runs had another user's one-step run wait behind all of them (it
started 30 s after its create). Now at most RUNS_MAX_INFLIGHT_PER_USER runs of
a user are in flight (dispatched, or processing); the rest wait queued in the
database, and each run that ends hands over its owner's next.
"""

import pytest

from runs import reaper, services, takeover
from runs.models import Run
from tests.processes import procfile_worker, subprocess_env
from tests.waiting import wait_for

PLAN = [{"tool": "echo", "args": {"n": 1}}]


@pytest.fixture
def fair(settings):
    settings.RUNS_MAX_INFLIGHT_PER_USER = 1
    return settings


@pytest.mark.django_db(transaction=True)
def test_a_users_backlog_waits_in_the_database_and_others_go_first(user, other_user, fair, dispatched):
    backlog = [services.run_create(owner=user, steps=PLAN) for _ in range(3)]
    assert dispatched == [backlog[0].id]  # the rest wait their turn, queued
    assert [r.status for r in backlog] == ["queued"] * 3

    theirs = services.run_create(owner=other_user, steps=PLAN)
    assert dispatched == [backlog[0].id, theirs.id]  # not behind the backlog

    services.run_cancel(run_id=backlog[0].id)  # a run that ends hands over its owner's next
    assert dispatched == [backlog[0].id, theirs.id, backlog[1].id]
    services.run_start(run_id=backlog[1].id)
    services.run_fail(run_id=backlog[1].id, error="x")
    assert dispatched[-1] == backlog[2].id
    services.run_delete(run_id=backlog[2].id)
    assert len(dispatched) == 4


@pytest.mark.django_db(transaction=True)
def test_the_sweeps_dispatch_a_waiting_run_whose_hand_over_was_lost(user, fair, dispatched, monkeypatch):
    monkeypatch.setattr(takeover, "broker_lost_its_messages", lambda: False)
    first, second = (services.run_create(owner=user, steps=PLAN) for _ in range(2))
    # The first ended without its hand-over (its process died between them).
    Run.objects.filter(pk=first.pk).update(status="cancelled")
    assert dispatched == [first.id]

    assert reaper.reap_stuck_runs(stale_after=3600).redispatched == [second.id]
    assert takeover.take_over_runs().released == []  # in flight now: nothing more to dispatch
    assert dispatched == [first.id, second.id]


@pytest.mark.django_db(transaction=True)
def test_a_waiting_run_is_not_late_for_the_reaper_nor_lost_for_the_take_over(
    user, fair, dispatched, monkeypatch
):
    monkeypatch.setattr(takeover, "broker_lost_its_messages", lambda: True)
    first, waiting = (services.run_create(owner=user, steps=PLAN) for _ in range(2))

    assert reaper.reap_stuck_runs(stale_after=0.0).redispatched == [first.id]
    assert takeover.take_over_runs().redispatched == [first.id]
    assert waiting.id not in dispatched


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.e2e
def test_another_users_run_starts_before_a_full_backlog_drains(user, other_user, settings):
    """The probe's case through the Procfile's worker (2 processes): user A at its most
    active runs, each of several steps; user B's one-step run starts while A's first
    runs are still going, not after A's backlog."""
    settings.RUNS_MAX_INFLIGHT_PER_USER = 1
    concurrency = 2
    env = subprocess_env(RUNS_MAX_INFLIGHT_PER_USER="1", WORKER_CONCURRENCY=str(concurrency))
    backlog_size = settings.RUNS_MAX_ACTIVE_PER_USER or 10
    steps = [{"tool": "wait", "args": {"seconds": 1}}] * 3
    backlog = [services.run_create(owner=user, steps=steps) for _ in range(backlog_size)]
    with procfile_worker(env):
        wait_for(
            lambda: Run.objects.filter(pk=backlog[0].pk, status="processing").exists(), what="A's first run"
        )
        theirs = services.run_create(owner=other_user, steps=[{"tool": "echo", "args": {"n": 1}}])
        theirs = wait_for(
            lambda: Run.objects.filter(pk=theirs.pk, status="succeeded").first(), what="B's run to finish"
        )
        waited = (theirs.started_at - theirs.created_at).total_seconds()
        print(f"B's run started {waited:.2f} s after its create")
    started_before = Run.objects.filter(
        owner=user, started_at__isnull=False, started_at__lt=theirs.started_at
    ).count()
    # At most one of A's runs per worker process had started: B did not wait for the backlog.
    assert started_before <= concurrency, started_before
    assert Run.objects.filter(owner=user, status="queued").exists()  # A's backlog still waits
