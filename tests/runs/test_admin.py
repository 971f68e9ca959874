"""The runs admin: list, filters, search, read-only steps, actions, and status edits through services."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from runs import services
from runs.models import Run

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/runs/run/"


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def sent(monkeypatch):
    captured = []
    monkeypatch.setattr("runs.dispatch._send", captured.append)
    return captured


def change_url(run):
    return f"/admin/runs/run/{run.id}/change/"


def messages_of(response):
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_changelist_shows_status_owner_progress_and_duration(admin_client, make_run):
    run = make_run("processing", prompt="find flights")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output=None)
    queued = make_run(prompt="later")
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert str(run.id) in page and str(queued.id) in page
    assert "1/3" in page and "0/3" in page  # progress: steps succeeded / total
    assert page.count("—") >= 1  # the queued run has no duration yet
    rows = {r.pk: r for r in response.context["cl"].result_list}
    admin = response.context["cl"].model_admin
    # The cells the live script updates carry the run's id.
    assert admin.progress(rows[run.id]) == f'<span data-run-progress="{run.id}">1/3</span>'
    assert f'data-run-status="{run.id}">processing<' in admin.live_status(rows[run.id])
    assert 'id="live-connection"' in page and "web/run-view.js" in page
    assert admin.duration(rows[run.id]).endswith("s")
    assert admin.duration(rows[queued.id]) == "—"


def test_changelist_names_its_columns_and_actions_and_sorts_by_id_status_and_creation(admin_client, make_run):
    from django.contrib.admin.templatetags.admin_list import result_headers
    from django.utils.text import capfirst

    make_run()
    response = admin_client.get(CHANGELIST)
    cl = response.context["cl"]
    # As the page shows them (its template capitalises each header's first letter).
    headers = [(capfirst(h["text"]), h["sortable"]) for h in result_headers(cl)][1:]  # after the checkbox
    assert headers == [
        ("Run", True),
        ("Status", True),
        ("Owner", True),
        ("Progress", False),
        ("Created", True),
        ("Duration", False),
    ]
    run = cl.result_list[0]
    assert cl.model_admin.short_id(run) == f'<code title="{run.id}">{str(run.id)[:8]}</code>'
    actions = [label for name, label in response.context["action_form"].fields["action"].choices if name]
    assert actions == [
        "Delete selected runs",
        "Cancel selected runs",
        "Re-run selected runs (new runs, same plan)",
    ]


def test_delete_selected_deletes_each_run_through_the_service_even_one_deleted_meanwhile(
    admin_client, make_run, monkeypatch
):
    first, second, kept = make_run("processing"), make_run(), make_run()
    real_delete, deleted = services.run_delete, []

    def another_operator_first(*, run_id):
        if not deleted:
            real_delete(run_id=second.id)  # another operator's delete of a selected run, meanwhile
        deleted.append(run_id)
        real_delete(run_id=run_id)

    monkeypatch.setattr(services, "run_delete", another_operator_first)
    chosen = sorted([first.id, second.id], key=str)
    response = admin_client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [str(i) for i in chosen], "post": "yes"},
    )
    assert response.status_code == 302
    assert sorted(deleted, key=str) == chosen  # each one through the service
    assert list(Run.objects.values_list("pk", flat=True)) == [kept.id]


def test_changelist_filters_by_status_and_owner(admin_client, make_run, user, other_user):
    failed = make_run("failed")
    theirs = make_run(owner=other_user)
    by_status = admin_client.get(CHANGELIST, {"status__exact": "failed"}).context["cl"].result_list
    assert [r.pk for r in by_status] == [failed.id]
    by_owner = admin_client.get(CHANGELIST, {"owner__id__exact": other_user.pk}).context["cl"].result_list
    assert [r.pk for r in by_owner] == [theirs.id]


def test_search_by_prompt_and_by_id(admin_client, make_run):
    flights = make_run(prompt="book flights to Lisbon")
    hotel = make_run(prompt="find a hotel")
    found = admin_client.get(CHANGELIST, {"q": "lisbon"}).context["cl"].result_list
    assert [r.pk for r in found] == [flights.id]
    found = admin_client.get(CHANGELIST, {"q": str(hotel.id)}).context["cl"].result_list
    assert [r.pk for r in found] == [hotel.id]
    found = admin_client.get(CHANGELIST, {"q": f"  {str(hotel.id).upper()} "}).context["cl"].result_list
    assert [r.pk for r in found] == [hotel.id]
    assert admin_client.get(CHANGELIST, {"q": "nothing like this"}).context["cl"].result_count == 0


def test_change_page_shows_the_live_run_and_no_status_field(admin_client, make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output={"ok": True})
    response = admin_client.get(change_url(run))
    assert response.status_code == 200
    page = response.content.decode()
    # The live panel, mounted on the run's snapshot (steps with their output).
    assert 'id="run-panel"' in page and 'id="run-snapshot"' in page and '"ok": true' in page
    assert "mountRunView" in page
    # Nothing editable: no status dropdown, no save buttons; cancel and re-run are buttons.
    assert 'name="status"' not in page and 'name="plan"' not in page and 'name="prompt"' not in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page and 'name="_addanother"' not in page
    assert f"/admin/runs/run/{run.id}/cancel/" in page and f"/admin/runs/run/{run.id}/rerun/" in page
    # Timestamps to the second.
    created = timezone.localtime(Run.objects.get(pk=run.id).created_at).strftime("%Y-%m-%d %H:%M:%S")
    assert created in page


def test_no_cancel_button_once_finished(admin_client, make_run):
    run = make_run("succeeded")
    page = admin_client.get(change_url(run)).content.decode()
    assert f"/admin/runs/run/{run.id}/cancel/" not in page
    assert f"/admin/runs/run/{run.id}/rerun/" in page


def test_cancel_action(admin_client, make_run):
    queued, processing, done = make_run(), make_run("processing"), make_run("succeeded")
    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_runs", "_selected_action": [str(queued.id), str(processing.id), str(done.id)]},
        follow=True,
    )
    assert response.status_code == 200
    assert Run.objects.get(pk=queued.id).status == "cancelled"
    assert Run.objects.get(pk=processing.id).cancel_requested_at is not None
    assert Run.objects.get(pk=done.id).status == "succeeded"
    shown = messages_of(response)
    assert "Cancelled (or asked to cancel) 2 run(s)." in shown
    assert any(str(done.id) in m and "cannot be cancelled" in m for m in shown)


def test_rerun_action_creates_new_runs_with_the_same_plan(
    admin_client, make_run, sent, django_capture_on_commit_callbacks
):
    old = make_run("failed", prompt="again", steps=[{"tool": "wait", "args": {"seconds": 0}}])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST, {"action": "rerun_runs", "_selected_action": [str(old.id)]}, follow=True
        )
    assert "Created 1 new run(s)." in messages_of(response)
    new = Run.objects.exclude(pk=old.id).get()
    assert (new.status, new.prompt, new.plan, new.owner) == ("queued", "again", old.plan, old.owner)
    assert sent == [new.id]
    assert Run.objects.get(pk=old.id).status == "failed"


def test_rerun_of_a_plan_no_longer_valid_is_refused_with_a_message(admin_client, make_run, temporary_tools):
    from runs.tools import registry, tool

    tool("vanishing_h1")(lambda: 1)
    old = make_run(steps=[{"tool": "vanishing_h1"}])
    ok = make_run()
    del registry._registry["vanishing_h1"]
    response = admin_client.post(
        CHANGELIST, {"action": "rerun_runs", "_selected_action": [str(old.id), str(ok.id)]}, follow=True
    )
    assert response.status_code == 200
    shown = messages_of(response)
    assert "Created 1 new run(s)." in shown
    assert f"Not re-run: {old.id}: step 1: unknown tool 'vanishing_h1'" in shown
    assert Run.objects.count() == 3


def test_a_posted_status_changes_nothing(admin_client, make_run):
    """No status edits: a forged POST of the old form cannot mark a processing run succeeded."""
    run = make_run("processing")
    before = Run.objects.filter(pk=run.id).values().get()
    response = admin_client.post(change_url(run), {"status": "succeeded"})
    assert response.status_code == 302
    assert Run.objects.filter(pk=run.id).values().get() == before


def test_cancel_button_cancels_through_the_service(admin_client, make_run):
    queued, processing = make_run(), make_run("processing")
    response = admin_client.post(f"/admin/runs/run/{queued.id}/cancel/", follow=True)
    assert response.status_code == 200
    assert Run.objects.get(pk=queued.id).status == "cancelled"
    assert "Cancel requested" in " ".join(messages_of(response))
    admin_client.post(f"/admin/runs/run/{processing.id}/cancel/")
    assert Run.objects.get(pk=processing.id).cancel_requested_at is not None
    response = admin_client.post(f"/admin/runs/run/{queued.id}/cancel/", follow=True)
    assert "cannot be cancelled" in " ".join(messages_of(response))


def test_cancel_and_rerun_are_post_only_and_404_for_unknown_runs(admin_client, make_run):
    run = make_run()
    assert admin_client.get(f"/admin/runs/run/{run.id}/cancel/").status_code == 405
    assert admin_client.get(f"/admin/runs/run/{run.id}/rerun/").status_code == 405
    assert Run.objects.get(pk=run.id).status == "queued"
    assert (
        admin_client.post("/admin/runs/run/00000000-0000-0000-0000-000000000000/cancel/").status_code == 404
    )
    assert admin_client.post("/admin/runs/run/not-a-uuid/rerun/").status_code == 404


def test_rerun_button_links_to_the_new_run(admin_client, make_run, sent):
    old = make_run("failed", prompt="again")
    response = admin_client.post(f"/admin/runs/run/{old.id}/rerun/", follow=True)
    new = Run.objects.exclude(pk=old.id).get()
    assert (new.prompt, new.plan, new.owner) == ("again", old.plan, old.owner)
    shown = " ".join(messages_of(response))
    assert f'<a href="/admin/runs/run/{new.id}/change/">run {new.id}</a>' in shown
    assert response.redirect_chain[-1][0] == change_url(old)


def test_add_form_creates_a_run_through_the_service(
    admin_client, user, sent, django_capture_on_commit_callbacks
):
    plan = [{"tool": "echo", "args": {"x": 1}}, {"tool": "fail"}]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/runs/run/add/",
            {
                "owner": user.pk,
                "prompt": "from the admin",
                "plan": json.dumps(plan),
                **inline_management_empty(),
            },
        )
    assert response.status_code == 302, response.content.decode()[:3000]
    run = Run.objects.get()
    assert (run.owner, run.prompt, run.status) == (user, "from the admin", "queued")
    assert run.plan == [plan[0], {"tool": "fail", "args": {"message": "failed on purpose"}}]
    assert sent == [run.id]
    assert LogEntry.objects.filter(object_id=str(run.id)).exists()


def inline_management_empty():
    return {
        "steps-TOTAL_FORMS": "0",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "0",
    }


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ('[{"tool": "nope"}]', "unknown tool &#x27;nope&#x27;"),
        ("[]", "This field is required."),
        ('{"tool": "echo"}', "steps must be a list"),
        ('[{"tool": "wait", "args": {"seconds": true}}]', "got a boolean"),
        ("not json", "Enter a valid JSON."),
    ],
)
def test_add_form_refuses_a_bad_plan(admin_client, user, plan, message):
    response = admin_client.post(
        "/admin/runs/run/add/", {"owner": user.pk, "prompt": "", "plan": plan, **inline_management_empty()}
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert Run.objects.count() == 0


def test_admin_needs_staff(client, user, make_run):
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "query",
    ["q=%00", "status__exact=%00", "owner__id__exact=%00", "owner__id__exact=abc", "o=%00", "p=%00", "p=999"],
)
def test_odd_changelist_queries_are_not_500s(admin_client, make_run, query):
    make_run()
    response = admin_client.get(f"{CHANGELIST}?{query}")
    assert response.status_code in (200, 302)
    if response.status_code == 302:
        assert response["Location"].endswith("?e=1")  # the admin's "invalid filter" page


@pytest.mark.parametrize("prompt_or_plan", ["prompt", "plan"])
def test_add_form_refuses_nul_characters(admin_client, user, prompt_or_plan):
    data = {"owner": user.pk, "prompt": "ok", "plan": '[{"tool": "echo"}]', **inline_management_empty()}
    data[prompt_or_plan] = (
        "a\x00b" if prompt_or_plan == "prompt" else '[{"tool": "echo", "args": {"t": "\\u0000"}}]'
    )
    response = admin_client.post("/admin/runs/run/add/", data)
    assert response.status_code == 200
    assert Run.objects.count() == 0
