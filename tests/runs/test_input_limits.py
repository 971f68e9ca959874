"""Text PostgreSQL cannot store, plans past the limits: refused alike by the API, the admin and the service.

A lone surrogate (``"\\ud800"``) is valid in a JSON escape and in a Python
string but cannot be encoded as UTF-8: it reached psycopg and was a 500.
"""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

from runs import services
from runs.models import Run
from runs.tools import PlanError
from runs.validation import PROMPT_MAX_LENGTH
from tests.runs.test_admin import inline_management_empty

pytestmark = pytest.mark.django_db

ADD = "/admin/runs/run/add/"

# Each: a plan holding text that cannot be stored, as JSON text (escapes as a client sends them).
UNSTORABLE_PLANS = [
    '[{"tool": "echo", "args": {"text": "\\ud800"}}]',
    '[{"tool": "echo", "args": {"a": {"b": ["ok", "x\\udfff"]}}}]',
    '[{"tool": "echo", "args": {"\\ud800": 1}}]',
    '[{"tool": "echo", "args": {"deep": {"\\udc00key": 1}}}]',
    '[{"tool": "fail", "args": {"message": "\\ud800"}}]',
    '[{"tool": "echo", "args": {"text": "a\\u0000b"}}]',
    '[{"tool": "echo", "args": {"a\\u0000": 1}}]',
    '[{"tool": "\\ud800", "args": {}}]',
    '[{"tool": "echo", "\\ud800": 1}]',
    '[{"tool": "wait", "args": {"\\ud800": 1}}]',
]


def echo_steps(count: int) -> list[dict]:
    return [{"tool": "echo", "args": {"n": index}} for index in range(count)]


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def admin_add(admin_client, user, *, plan: str, prompt: str = ""):
    data = {"owner": user.pk, "prompt": prompt, "plan": plan, **inline_management_empty()}
    return admin_client.post(ADD, data)


@pytest.mark.parametrize("plan", UNSTORABLE_PLANS)
def test_the_api_refuses_text_postgresql_cannot_store(api, dispatched, plan):
    body = f'{{"prompt": "p", "steps": {plan}}}'
    response = api.post("/api/runs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_plan"
    assert "must not contain" in response.json()["message"]
    assert Run.objects.count() == 0 and dispatched == []


@pytest.mark.parametrize(
    ("args", "named"),
    [('{"a\\u0000": 1}', "args keys"), ('{"deep": {"\\ud800": 1}}', "args.deep keys")],
)
def test_a_key_that_cannot_be_stored_is_named_by_where_it_is(api, dispatched, args, named):
    body = '{"steps": [{"tool": "echo", "args": ' + args + "}]}"
    response = api.post("/api/runs/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["message"].startswith(
        f"step 1: {named} must not contain"
    )


def test_brackets_in_a_string_are_text_not_nesting(api, dispatched):
    """An escaped quote does not end a string: the 600 brackets after it are the prompt's, not JSON's."""
    prompt = '\\"' + "[" * 600
    body = '{"prompt": "' + prompt + '", "steps": [{"tool": "echo", "args": {}}]}'
    response = api.post("/api/runs/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["prompt"] == '"' + "[" * 600


@pytest.mark.parametrize("plan", UNSTORABLE_PLANS)
def test_the_admin_refuses_text_postgresql_cannot_store(admin_client, user, dispatched, plan):
    response = admin_add(admin_client, user, plan=plan)
    assert response.status_code == 200
    assert "must not contain" in response.content.decode()
    assert Run.objects.count() == 0 and dispatched == []


@pytest.mark.parametrize("plan", UNSTORABLE_PLANS)
def test_the_service_refuses_text_postgresql_cannot_store(user, dispatched, plan):
    with pytest.raises(PlanError, match="must not contain"):
        services.run_create(owner=user, steps=json.loads(plan))
    assert Run.objects.count() == 0


@pytest.mark.parametrize("prompt", ["a\x00b", "a\ud800b", "p" * 20_001, 7])
def test_the_service_refuses_a_prompt_it_cannot_store(user, dispatched, prompt):
    with pytest.raises(PlanError) as refused:
        services.run_create(owner=user, steps=echo_steps(1), prompt=prompt)
    assert refused.value.field == "prompt"
    assert Run.objects.count() == 0


def test_the_admin_refuses_a_prompt_over_the_apis_limit(admin_client, user, dispatched):
    response = admin_add(admin_client, user, plan=json.dumps(echo_steps(1)), prompt="p" * 20_001)
    assert response.status_code == 200
    assert "20000" in response.content.decode()
    assert Run.objects.count() == 0


# --- The prompt's 20,000 characters, at the limit and one past it, on every entry point ------


def test_the_service_takes_the_longest_prompt_and_refuses_one_character_more(user, dispatched):
    assert services.run_create(owner=user, steps=echo_steps(1), prompt="p" * PROMPT_MAX_LENGTH).prompt
    with pytest.raises(PlanError, match=f"at most {PROMPT_MAX_LENGTH} characters"):
        services.run_create(owner=user, steps=echo_steps(1), prompt="p" * (PROMPT_MAX_LENGTH + 1))
    assert Run.objects.count() == 1


def test_the_api_takes_the_longest_prompt_and_refuses_one_character_more(api, dispatched):
    longest = {"prompt": "p" * PROMPT_MAX_LENGTH, "steps": echo_steps(1)}
    assert api.post("/api/runs/", longest, format="json").status_code == 201
    refused = api.post("/api/runs/", {**longest, "prompt": "p" * (PROMPT_MAX_LENGTH + 1)}, format="json")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid"
    assert "prompt" in refused.json()["message"]
    assert Run.objects.count() == 1


def test_the_admin_takes_the_longest_prompt(admin_client, user, dispatched):
    response = admin_add(admin_client, user, plan=json.dumps(echo_steps(1)), prompt="p" * PROMPT_MAX_LENGTH)
    assert response.status_code == 302
    assert len(Run.objects.get().prompt) == PROMPT_MAX_LENGTH


@pytest.mark.parametrize("depth", [settings.RUNS_MAX_ARGS_DEPTH, 900, 5_000, 100_000])
def test_the_admin_refuses_a_plan_nested_too_deep(admin_client, user, dispatched, depth):
    """One level past the limit (args is the first), and far past it: 5,000 levels were a
    RecursionError in json.loads (a 500); 900 then failed to be shown again."""
    plan = '[{"tool": "echo", "args": {"a": ' + "[" * depth + "]" * depth + "}}]"
    response = admin_add(admin_client, user, plan=plan)
    assert response.status_code == 200
    limit = settings.RUNS_MAX_ARGS_DEPTH
    assert f"a step&#x27;s args are nested more than {limit} levels deep" in response.content.decode()
    assert Run.objects.count() == 0 and dispatched == []


@pytest.mark.parametrize(("open_", "close"), [("[", "]"), ('{"a": ', "}")], ids=["arrays", "objects"])
def test_the_api_takes_arguments_nested_to_the_limit_and_refuses_one_level_more(
    api, dispatched, open_, close
):
    limit = settings.RUNS_MAX_ARGS_DEPTH

    def create(levels: int):
        """args (level 1) holding a value ``levels`` deep: ``levels`` - 1 wrappers around an empty list."""
        value = open_ * (levels - 1) + "[]" + close * (levels - 1)
        body = '{"steps": [{"tool": "echo", "args": {"a": ' + value + "}}]}"
        return api.post("/api/runs/", body, content_type="application/json")

    assert create(limit - 1).status_code == 201
    refused = create(limit)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_plan"
    assert f"nested more than {settings.RUNS_MAX_ARGS_DEPTH} levels deep" in refused.json()["message"]
    assert Run.objects.count() == 1


def test_the_admin_takes_a_plan_nested_to_the_limit(admin_client, user, dispatched):
    depth = settings.RUNS_MAX_ARGS_DEPTH - 1  # args itself is the first level
    plan = '[{"tool": "echo", "args": {"a": ' + "[" * depth + "]" * depth + "}}]"
    response = admin_add(admin_client, user, plan=plan)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Run.objects.count() == 1


# --- RUNS_MAX_STEPS, at the limit and one past it, on every entry point -----------------


def test_the_service_takes_the_most_steps_and_refuses_one_more(user, dispatched):
    limit = settings.RUNS_MAX_STEPS
    run = services.run_create(owner=user, steps=echo_steps(limit))
    assert len(run.plan) == limit
    with pytest.raises(PlanError, match=f"at most {limit} steps, got {limit + 1}"):
        services.run_create(owner=user, steps=echo_steps(limit + 1))
    assert Run.objects.count() == 1


def test_the_api_takes_the_most_steps_and_refuses_one_more(api, dispatched):
    limit = settings.RUNS_MAX_STEPS
    created = api.post("/api/runs/", {"steps": echo_steps(limit)}, format="json")
    assert created.status_code == 201 and len(created.json()["plan"]) == limit
    refused = api.post("/api/runs/", {"steps": echo_steps(limit + 1)}, format="json")
    assert refused.status_code == 400
    assert f"at most {limit} steps, got {limit + 1}" in refused.json()["message"]
    assert Run.objects.count() == 1


def test_the_admin_takes_the_most_steps_and_refuses_one_more(admin_client, user, dispatched):
    limit = settings.RUNS_MAX_STEPS
    assert admin_add(admin_client, user, plan=json.dumps(echo_steps(limit))).status_code == 302
    refused = admin_add(admin_client, user, plan=json.dumps(echo_steps(limit + 1)))
    assert refused.status_code == 200
    assert f"at most {limit} steps, got {limit + 1}" in refused.content.decode()
    assert Run.objects.count() == 1


def test_numbers_stop_at_4300_digits_even_where_python_itself_has_no_limit():
    """PYTHONINTMAXSTRDIGITS=0 lifts Python's own limit: the input's stays (json.loads would take any)."""
    code = (
        "from runs.validation import InputError, MAX_INTEGER_DIGITS, load_json\n"
        "load_json('9' * 4300)\n"
        "try:\n    load_json('9' * 4301)\nexcept InputError as e:\n    print(MAX_INTEGER_DIGITS, e)\n"
    )
    env = {**os.environ, "PYTHONINTMAXSTRDIGITS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR
    )
    assert done.stdout == "4300 a number has more than 4300 digits\n", done.stderr
