"""Per-user quotas (issue 21 #5): active runs and creates per minute, in run_create, for every entry point.

One token created 388 runs in 9 s. Now a user over RUNS_MAX_ACTIVE_PER_USER
(runs queued or processing) or RUNS_MAX_CREATES_PER_MINUTE is refused with a
message that says which and when to try again; staff are exempt.
"""

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from runs import services
from runs.models import Run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("dispatched")]

PLAN = [{"tool": "echo", "args": {"n": 1}}]


@pytest.fixture
def quotas(settings):
    settings.RUNS_MAX_ACTIVE_PER_USER = 2
    settings.RUNS_MAX_CREATES_PER_MINUTE = 0
    return settings


def test_over_the_active_runs_the_api_answers_429_with_retry_after_and_creates_nothing(api, user, quotas):
    for _ in range(2):
        assert api.post("/api/runs/", {"steps": PLAN}, format="json").status_code == 201

    response = api.post("/api/runs/", {"steps": PLAN}, format="json")

    assert response.status_code == 429
    assert response["Retry-After"] == str(quotas.RUNS_ACTIVE_RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["error"] == "quota_exceeded" and body["limit"] == "active_runs"
    assert body["retry_after"] == quotas.RUNS_ACTIVE_RETRY_AFTER_SECONDS
    assert "2 runs queued or processing" in body["message"], body
    assert Run.objects.filter(owner=user).count() == 2


def test_a_run_that_ends_frees_its_place(api, user, quotas):
    first = services.run_create(owner=user, steps=PLAN)
    services.run_create(owner=user, steps=PLAN)
    with pytest.raises(services.QuotaExceeded):
        services.run_create(owner=user, steps=PLAN)
    services.run_cancel(run_id=first.id)
    assert api.post("/api/runs/", {"steps": PLAN}, format="json").status_code == 201


def test_over_the_creates_per_minute_retry_after_is_when_the_oldest_leaves_the_minute(api, user, settings):
    settings.RUNS_MAX_ACTIVE_PER_USER = 0
    settings.RUNS_MAX_CREATES_PER_MINUTE = 3
    runs = [services.run_create(owner=user, steps=PLAN) for _ in range(3)]
    # The oldest of them was created 50 s ago: the minute has room again in about 10 s.
    Run.objects.filter(pk=runs[0].pk).update(created_at=runs[0].created_at - timedelta(seconds=50))

    response = api.post("/api/runs/", {"steps": PLAN}, format="json")

    assert response.status_code == 429
    body = response.json()
    assert body["limit"] == "creates_per_minute"
    assert 1 <= int(response["Retry-After"]) <= 11 and body["retry_after"] == int(response["Retry-After"])
    assert "3 runs in the last minute" in body["message"]
    Run.objects.filter(pk=runs[0].pk).update(created_at=runs[0].created_at - timedelta(seconds=61))
    assert api.post("/api/runs/", {"steps": PLAN}, format="json").status_code == 201


def test_a_create_counts_against_the_minute_for_60_seconds_and_no_longer(api, user, settings, monkeypatch):
    """At the window's edge: 59 s old still counts, 60 s old no longer does (the clock stands still)."""
    settings.RUNS_MAX_ACTIVE_PER_USER = 0
    settings.RUNS_MAX_CREATES_PER_MINUTE = 3
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)
    runs = [services.run_create(owner=user, steps=PLAN) for _ in range(3)]
    Run.objects.filter(pk=runs[0].pk).update(created_at=now - timedelta(seconds=59))

    refused = api.post("/api/runs/", {"steps": PLAN}, format="json")

    assert (refused.status_code, refused["Retry-After"]) == (429, "1")
    Run.objects.filter(pk=runs[0].pk).update(created_at=now - timedelta(seconds=60))
    assert api.post("/api/runs/", {"steps": PLAN}, format="json").status_code == 201


def test_staff_are_exempt(staff_user, quotas):
    for _ in range(5):
        services.run_create(owner=staff_user, steps=PLAN)
    assert Run.objects.filter(owner=staff_user).count() == 5


def test_re_run_obeys_the_quota(user, quotas):
    run = services.run_create(owner=user, steps=PLAN)
    services.run_rerun(run=run, owner=user)
    with pytest.raises(services.QuotaExceeded):
        services.run_rerun(run=run, owner=user)


def test_the_run_pages_re_run_says_why(client, user, quotas):
    client.force_login(user)
    first = services.run_create(owner=user, steps=PLAN)
    services.run_create(owner=user, steps=PLAN)
    response = client.post(f"/runs/{first.id}/rerun/", follow=True)
    assert response.redirect_chain == [(f"/runs/{first.id}/", 302)]
    assert "Not re-run: you have 2 runs queued or processing" in response.content.decode()
    assert Run.objects.filter(owner=user).count() == 2


def test_the_page_says_why_with_429(client, user, quotas):
    client.force_login(user)
    for _ in range(2):
        services.run_create(owner=user, steps=PLAN)
    response = client.post("/runs/new/", {"step-0-tool": "echo", "step-0-arg-echo-text": "hi"})
    assert response.status_code == 429
    assert response["Retry-After"] == str(quotas.RUNS_ACTIVE_RETRY_AFTER_SECONDS)
    assert "Not created: you have 2 runs queued or processing" in response.content.decode()
    assert Run.objects.filter(owner=user).count() == 2


def test_the_admin_says_why(client, staff_user, user, quotas):
    client.force_login(staff_user)
    run = services.run_create(owner=user, steps=PLAN)
    services.run_create(owner=user, steps=PLAN)
    response = client.post(
        "/admin/runs/run/add/", {"owner": user.pk, "prompt": "", "plan": '[{"tool": "echo", "args": {}}]'}
    )
    assert response.status_code == 200  # the form again, with the reason
    assert "is over a quota: you have 2 runs queued or processing" in response.content.decode()
    response = client.post(f"/admin/runs/run/{run.id}/rerun/", follow=True)
    assert any("Not re-run: you have 2 runs" in str(m) for m in response.context["messages"])
    assert Run.objects.filter(owner=user).count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_creates_of_one_user_never_exceed_the_quota(user, quotas):
    """Counted under the owner's row lock: ten creates at once, two accepted."""
    barrier, outcomes = threading.Barrier(10), []

    def create():
        try:
            barrier.wait()
            services.run_create(owner=user, steps=PLAN)
            outcomes.append("created")
        except services.QuotaExceeded:
            outcomes.append("refused")
        finally:
            close_old_connections()

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 8
    assert Run.objects.filter(owner=user).count() == 2
