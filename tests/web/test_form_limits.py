"""The new-run form under hostile and oversized posts: bounded like the API, a 400, never a 500."""

import pytest
from django.conf import settings

from runs.models import Run
from tests.runs.conftest import temporary_tools  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, user):
    client.force_login(user)
    return client


def rows_rendered(response) -> int:
    """The step rows of the form itself (the add-a-step template is one more, not counted)."""
    page = response.content.decode()
    return page.split('id="step-template"')[0].count('<fieldset class="step"')


def echo_rows(count: int, *, first: int = 0) -> dict[str, str]:
    data = {}
    for row in range(first, first + count):
        data |= {
            f"step-{row}-tool": "echo",
            f"step-{row}-any-echo-name": "n",
            f"step-{row}-any-echo-value": str(row),
        }
    return data


@pytest.mark.parametrize("row", ["20000", "99999999999", "9" * 5000])
def test_a_row_number_far_past_the_limit_renders_a_bounded_page(alice_client, dispatched, row):
    """One field named step-<huge>-… once made the error page render that many rows (35 MB for 20,000)."""
    response = alice_client.post("/runs/new/", {f"step-{row}-x": "1"})
    assert response.status_code == 400
    assert rows_rendered(response) <= settings.RUNS_MAX_STEPS + 1
    assert Run.objects.count() == 0 and dispatched == []


def test_a_row_number_of_nine_digits_is_a_row_and_one_of_ten_is_refused(alice_client, dispatched):
    """Nine digits is the longest row number the form reads as a row; a page never makes one longer."""
    highest = "9" * 9
    created = alice_client.post(
        "/runs/new/",
        {
            f"step-{highest}-tool": "echo",
            f"step-{highest}-any-echo-name": "n",
            f"step-{highest}-any-echo-value": "9",
        },
    )
    assert created.status_code == 302
    assert Run.objects.get().plan == [{"tool": "echo", "args": {"n": "9"}}]
    refused = alice_client.post("/runs/new/", {"step-0-tool": "echo", f"step-1{highest}-tool": "echo"})
    assert refused.status_code == 400
    assert "the form has no row numbered that high" in refused.content.decode()
    assert Run.objects.count() == 1


def test_a_new_form_has_three_rows_and_one_shown_again_the_rows_it_had(alice_client, dispatched):
    assert rows_rendered(alice_client.get("/runs/new/")) == 3
    refused = alice_client.post("/runs/new/", echo_rows(4) | {"step-4-tool": "nope"})
    assert refused.status_code == 400 and rows_rendered(refused) == 5


def test_a_tool_in_a_row_far_past_the_limit_is_refused_not_rendered(alice_client, dispatched):
    response = alice_client.post("/runs/new/", {"step-0-tool": "echo", "step-99999999999-tool": "wait"})
    assert response.status_code == 400
    assert "at most" in response.content.decode()
    assert rows_rendered(response) <= settings.RUNS_MAX_STEPS + 1
    assert Run.objects.count() == 0


def test_the_form_takes_as_many_steps_as_the_api(alice_client, dispatched):
    response = alice_client.post("/runs/new/", echo_rows(settings.RUNS_MAX_STEPS))
    assert response.status_code == 302
    run = Run.objects.get()
    assert [step["args"]["n"] for step in run.plan] == [str(row) for row in range(settings.RUNS_MAX_STEPS)]


@pytest.mark.parametrize("first", [0, 7])
def test_one_step_past_the_limit_is_refused_not_dropped(alice_client, dispatched, first):
    """The form used to run the first 50 rows and drop the rest without a word; the API answers 400."""
    data = {f"step-{row}-tool": "" for row in range(first)} | echo_rows(
        settings.RUNS_MAX_STEPS + 1, first=first
    )
    response = alice_client.post("/runs/new/", data)
    assert response.status_code == 400
    page = response.content.decode()
    limit = settings.RUNS_MAX_STEPS
    # The form's own words (the service would refuse too, without saying how to fix the form).
    assert (
        f"a run has at most {limit} steps, got {limit + 1}: set the tool of the steps you do not need" in page
    )
    assert 'id="form-error"' in page
    # The page is shown again with the rows it had, up to one past the limit; nothing was created.
    assert rows_rendered(response) == limit + 1
    assert Run.objects.count() == 0 and dispatched == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "a\x00b"),
        ("step-0-any-echo-value", "a\x00b"),
        ("step-0-any-echo-name", "a\x00b"),
        ("step-0-arg-fail-message", "a\x00b"),
    ],
)
def test_a_nul_anywhere_in_the_form_is_a_400_naming_it(alice_client, dispatched, field, value):
    """A NUL in the prompt was a 500 (PostgreSQL's DataError); the API answers 400 for it."""
    tool = "fail" if "fail" in field else "echo"
    data = {"step-0-tool": tool, "step-0-any-echo-name": "text", field: value}
    response = alice_client.post("/runs/new/", data)
    assert response.status_code == 400
    assert "must not contain NUL characters" in response.content.decode()
    assert Run.objects.count() == 0 and dispatched == []


def test_the_longest_prompt_is_taken(alice_client, dispatched):
    response = alice_client.post("/runs/new/", {"prompt": "p" * 20_000, **echo_rows(1)})
    assert response.status_code == 302
    assert len(Run.objects.get().prompt) == 20_000


def test_a_prompt_over_the_apis_limit_is_refused(alice_client, dispatched):
    response = alice_client.post("/runs/new/", {"prompt": "p" * 20_001, **echo_rows(1)})
    assert response.status_code == 400
    assert "prompt" in response.content.decode() and "20000" in response.content.decode()
    assert Run.objects.count() == 0


@pytest.fixture
def nest_tool(temporary_tools):  # noqa: F811 (the fixture imported above)
    """A tool whose argument is an object: the form's textarea of JSON."""
    from runs.tools import Arg, tool

    tool("nest", args={"tree": Arg("object")})(lambda *, tree: tree)


def nested(levels: int) -> str:
    """An object nested ``levels`` deep: {"a": {"a": … {} …}}."""
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


@pytest.mark.parametrize("past", [1, 2])
def test_an_object_argument_nested_to_the_limit_is_taken_and_past_it_is_the_apis_refusal(
    alice_client, dispatched, nest_tool, past
):
    """args is the plan's first level: its argument may nest RUNS_MAX_ARGS_DEPTH - 1 more, as over the API.

    Past that, the plan's own message (the API's words, naming where), not the form's JSON reader's:
    the reader takes a document a level deeper than the plan allows, so the plan's check is the one
    that speaks.
    """
    limit = settings.RUNS_MAX_ARGS_DEPTH
    taken = alice_client.post(
        "/runs/new/", {"step-0-tool": "nest", "step-0-arg-nest-tree": nested(limit - 1)}
    )
    assert taken.status_code == 302
    too_deep = nested(limit - 1 + past)
    refused = alice_client.post("/runs/new/", {"step-0-tool": "nest", "step-0-arg-nest-tree": too_deep})
    assert refused.status_code == 400
    path = "args.tree" + ".a" * (limit - 1)
    assert f"{path} is nested more than {limit} levels deep" in refused.content.decode()
    assert Run.objects.count() == 1
