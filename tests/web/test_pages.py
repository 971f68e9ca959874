"""The pages without a browser: login, the form built from the tool registry, access, cancel, API docs."""

import json
import re

import pytest

from runs import services
from runs.models import Run
from tests.runs.conftest import temporary_tools  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/runs/", "/runs/new/", "/runs/6f1f9a52-0d8e-4b8e-9a53-3f6f0c0b1e2d/"])
def test_pages_need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_landing_and_login_pages(client, user):
    assert "Log in" in client.get("/login/").content.decode()
    response = client.post("/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/").content.decode()
    assert "Hello, alice" in page and 'href="/runs/new/"' in page


def test_the_home_page_lists_the_five_newest_runs(alice_client, user, dispatched):
    runs = [
        services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}], prompt=f"n{i}")
        for i in range(6)
    ]
    page = alice_client.get("/").content.decode()
    shown = re.findall(r'<li data-run-id="([^"]+)"', page)
    assert shown == [str(run.id) for run in reversed(runs[1:])]
    assert "limit: 5," in page  # the live list keeps as many


def test_the_form_has_a_field_per_tool_argument(alice_client):
    page = alice_client.get("/runs/new/").content.decode()
    assert 'name="step-0-tool"' in page
    assert 'name="step-0-arg-wait-seconds"' in page and 'type="number"' in page and 'max="60' in page
    assert 'name="step-0-arg-fail-message"' in page
    assert 'name="step-0-any-echo-value"' in page  # echo takes any arguments: a name/value pair
    assert "<textarea" not in page.split('id="step-template"')[0]  # no JSON box for these tools


def test_creating_a_run_from_the_form(alice_client, user, dispatched):
    response = alice_client.post(
        "/runs/new/",
        {
            "prompt": "from the form",
            "step-0-tool": "wait",
            "step-0-arg-wait-seconds": "1.5",
            "step-1-tool": "",  # an empty row is skipped
            "step-2-tool": "echo",
            "step-2-any-echo-name": "text",
            "step-2-any-echo-value": "hi",
            "step-3-tool": "fail",
            "step-3-arg-fail-message": "",  # optional, left out
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.id}/"
    assert (run.owner, run.prompt) == (user, "from the form")
    assert run.plan == [
        {"tool": "wait", "args": {"seconds": 1.5}},
        {"tool": "echo", "args": {"text": "hi"}},
        {"tool": "fail", "args": {"message": "failed on purpose"}},
    ]


@pytest.fixture
def typed_tool(temporary_tools):  # noqa: F811 (the fixture imported above)
    """A tool with a whole-number and a yes/no argument (no built-in tool has either)."""
    from runs.tools import Arg, tool

    tool("typed", args={"times": Arg("integer", minimum=1), "loud": Arg("boolean", required=False)})(
        lambda *, times, loud=False: times
    )


def test_a_whole_number_argument_steps_by_one_and_a_yes_no_one_is_a_checkbox(
    alice_client, dispatched, typed_tool
):
    page = alice_client.get("/runs/new/").content.decode()
    assert re.search(r'<input type="number" id="step-0-arg-typed-times"[^>]* step="1"', page)
    assert re.search(r'<input type="number" id="step-0-arg-wait-seconds"[^>]* step="any"', page)
    assert '<input type="checkbox" id="step-0-arg-typed-loud"' in page

    response = alice_client.post(
        "/runs/new/",
        {
            "step-0-tool": "typed",
            "step-0-arg-typed-times": "2",
            "step-0-arg-typed-loud": "on",  # a checked box posts its value; an unchecked one nothing
            "step-1-tool": "typed",
            "step-1-arg-typed-times": "3",
        },
    )
    assert response.status_code == 302
    assert Run.objects.get().plan == [
        {"tool": "typed", "args": {"times": 2, "loud": True}},
        {"tool": "typed", "args": {"times": 3, "loud": False}},
    ]


def test_a_number_is_kept_as_typed_a_whole_one_as_an_integer(alice_client, dispatched):
    """2 is the integer 2 (as in the API's JSON), 2.0 and 1.5 stay decimals: the plan holds what was typed."""
    rows = {"0": "2", "1": "2.0", "2": "1.5"}
    data = {f"step-{row}-tool": "wait" for row in rows} | {
        f"step-{row}-arg-wait-seconds": v for row, v in rows.items()
    }
    assert alice_client.post("/runs/new/", data).status_code == 302
    seconds = [step["args"]["seconds"] for step in Run.objects.get().plan]
    assert json.dumps(seconds) == "[2, 2.0, 1.5]"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "pick a tool for at least one step"),
        ({"step-0-tool": "nope"}, "Step 1: unknown tool &#x27;nope&#x27;"),
        ({"step-0-tool": "wait", "step-0-arg-wait-seconds": "abc"}, "Step 1: seconds must be a number"),
        ({"step-0-tool": "wait", "step-0-arg-wait-seconds": "999"}, "at most 60"),
        ({"step-1-tool": "wait"}, "Step 2: tool &#x27;wait&#x27; needs argument &#x27;seconds&#x27;"),
        ({"step-0-tool": "echo", "step-1-tool": "wait"}, "Step 2: tool &#x27;wait&#x27; needs"),
    ],
)
def test_a_bad_form_is_a_400_with_the_reason_and_creates_nothing(alice_client, dispatched, data, message):
    response = alice_client.post("/runs/new/", data)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'role="alert"' in page and message in page, page[page.find("alert") : page.find("alert") + 300]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("data", "marked"),
    [
        (
            {"step-0-tool": "wait", "step-0-arg-wait-seconds": "abc"},
            ["step-0-arg-wait-seconds"],
        ),  # the form's
        ({"step-0-tool": "wait", "step-0-arg-wait-seconds": "-1"}, ["step-0-arg-wait-seconds"]),  # the plan's
        ({"step-0-tool": "nope"}, ["step-0-tool"]),
        (
            {"step-0-tool": "echo", "step-0-any-echo-name": "t", "step-0-any-echo-value": "a\x00b"},
            ["step-0-any-echo-value"],
        ),
        (
            {"step-0-tool": "echo", "step-2-tool": "wait"},
            ["step-2-arg-wait-seconds"],
        ),  # the row, not the step
        ({}, []),  # about no one input
    ],
)
def test_a_bad_form_marks_the_one_input_at_fault(alice_client, dispatched, data, marked):
    page = alice_client.post("/runs/new/", data).content.decode()
    assert re.findall(r'id="([^"]+)"[^>]*aria-invalid="true" aria-errormessage="form-error"', page) == marked


def test_run_page_and_list_show_only_the_users_runs(alice_client, user, other_user, dispatched):
    mine = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}], prompt="mine")
    theirs = services.run_create(owner=other_user, steps=[{"tool": "echo", "args": {}}], prompt="theirs")
    page = alice_client.get(f"/runs/{mine.id}/").content.decode()
    assert 'id="run-panel"' in page and 'aria-live="polite"' in page and "mountRunView" in page
    snapshot = json.loads(page.split('id="run-snapshot" type="application/json">')[1].split("</script>")[0])
    assert snapshot["id"] == str(mine.id) and snapshot["seq"] == 0
    not_found = alice_client.get(f"/runs/{theirs.id}/")
    assert not_found.status_code == 404 and "No such run" in not_found.content.decode()
    listing = alice_client.get("/runs/").content.decode()
    assert str(mine.id) in listing and str(theirs.id) not in listing
    summaries = alice_client.get("/api/run-summaries/").json()["runs"]
    assert [r["id"] for r in summaries] == [str(mine.id)]


def test_cancel_from_the_page(alice_client, user, other_user, dispatched):
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    assert alice_client.get(f"/runs/{run.id}/cancel/").status_code == 405
    response = alice_client.post(f"/runs/{run.id}/cancel/", follow=True)
    assert Run.objects.get(pk=run.id).status == "cancelled"
    assert "Cancel requested" in response.content.decode()
    again = alice_client.post(f"/runs/{run.id}/cancel/", follow=True).content.decode()
    assert "cannot be cancelled" in again
    theirs = services.run_create(owner=other_user, steps=[{"tool": "echo", "args": {}}])
    assert alice_client.post(f"/runs/{theirs.id}/cancel/").status_code == 404
    assert Run.objects.get(pk=theirs.id).status == "queued"


def test_api_docs_are_served_from_the_app(client):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert (
        client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200
    )


def test_the_client_and_its_types_are_static_files(client):
    for name in ("quikday-realtime.js", "quikday-realtime.d.ts"):
        response = client.get(f"/static/realtime/{name}")
        assert response.status_code == 200
        assert "watchRun" in b"".join(response.streaming_content).decode()
