"""The owner's re-run without a browser: POST only, own runs only, the plan checked again."""

import pytest

from runs import services
from runs.models import Run

pytestmark = pytest.mark.django_db


def test_rerun_is_a_post_of_the_owner_or_staff(client, user, django_user_model, dispatched):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"t": "x"}}])
    other = django_user_model.objects.create_user(username="mallory", password="pw-mallory-123")
    client.force_login(other)
    assert client.post(f"/runs/{run.id}/rerun/").status_code == 404  # not revealed
    client.force_login(user)
    assert client.get(f"/runs/{run.id}/rerun/").status_code == 405
    assert Run.objects.count() == 1
    response = client.post(f"/runs/{run.id}/rerun/", follow=True)
    new = Run.objects.exclude(pk=run.id).get()
    assert response.redirect_chain == [(f"/runs/{new.id}/", 302)]
    assert (new.owner, new.plan) == (user, run.plan)
    # The new run's page names the run it re-ran by its short id (the first 8 characters).
    assert f"A re-run of run {str(run.id)[:8]}: same prompt, same steps." in response.content.decode()


@pytest.mark.parametrize("action", ["cancel", "rerun"])
def test_cancel_and_rerun_need_a_login(client, user, dispatched, action):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"t": "x"}}])
    response = client.post(f"/runs/{run.id}/{action}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert list(Run.objects.values_list("id", "status")) == [(run.id, "queued")]


def test_a_plan_no_longer_valid_is_not_rerun(client, user, dispatched):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {"t": "x"}}])
    Run.objects.filter(pk=run.id).update(plan=[{"tool": "vanished", "args": {}}])
    client.force_login(user)
    response = client.post(f"/runs/{run.id}/rerun/", follow=True)
    assert Run.objects.count() == 1
    assert "Not re-run: step 1: unknown tool &#x27;vanished&#x27;" in response.content.decode()
