"""Property-based: arbitrary text, keys, nesting and numbers through every way a run is created.

The API, the web form and the admin's add form each take whatever hypothesis
generates — NUL, lone surrogates, any Unicode, huge integers, NaN, deep
nesting, odd row numbers — and answer either a refusal (400 / a form error)
with nothing stored, or a created run whose prompt and arguments read back
exactly as sent. Never a 500: the test client re-raises a view's exception.
Bodies are sent as bytes, as a client would: a form's lone surrogate arrives
as the UTF-8 bytes of its code point, which Django decodes as U+FFFD.
"""

import json
import math
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.models import Run
from runs.validation import MAX_INTEGER_DIGITS
from tests.runs.test_admin import inline_management_empty

pytestmark = pytest.mark.django_db

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HOSTILE = ["\x00", "\ud800", "\udfff", "\ud800\udc00", "a\x00b", "\ufffe", "\u202e", "9" * 5000, " ", ""]

# Any code point, surrogates and NUL included, plus the known troublemakers.
texts = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=3).map("".join),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


def same(sent, stored) -> bool:
    """``stored`` reads back as ``sent`` (numbers through jsonb: equal, or as close as floats get)."""
    if isinstance(sent, bool) or isinstance(stored, bool):
        return sent is stored
    if isinstance(sent, (int, float)) and isinstance(stored, (int, float)):
        return sent == stored or math.isclose(sent, stored, rel_tol=1e-15)
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(same(sent[k], stored[k]) for k in sent)
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(same(a, b) for a, b in zip(sent, stored, strict=True))
    return sent == stored


def as_received(text: str) -> str:
    """What a form field holding ``text`` arrives as: its UTF-8 bytes, decoded with replacement."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def form_body(fields: list[tuple[str, str]]) -> bytes:
    return "&".join(
        f"{quote(name.encode('utf-8', 'surrogatepass'))}={quote(value.encode('utf-8', 'surrogatepass'))}"
        for name, value in fields
    ).encode("ascii")


def post_form(client, path: str, fields: list[tuple[str, str]]):
    return client.post(path, form_body(fields), content_type="application/x-www-form-urlencoded")


def newest_run_since(count: int) -> Run | None:
    return Run.objects.order_by("-created_at").first() if Run.objects.count() > count else None


# --- The API ---------------------------------------------------------------------------

huge_integers = st.integers(min_value=MAX_INTEGER_DIGITS - 5, max_value=MAX_INTEGER_DIGITS + 200).map(
    lambda digits: "9" * digits
)


@EXAMPLES
@given(prompt=texts, args=st.dictionaries(texts, json_values, max_size=4), huge=st.none() | huge_integers)
def test_the_api_refuses_or_stores_what_it_was_sent(api, dispatched, prompt, args, huge):
    body = json.dumps({"prompt": prompt, "steps": [{"tool": "echo", "args": args}]})
    if huge is not None:  # a number json.dumps cannot write: spliced into the text
        body = body.replace(
            '"steps": [{"tool": "echo", "args": {',
            f'"steps": [{{"tool": "echo", "args": {{"big": {huge}, ',
            1,
        )
        body = body.replace(f"{huge}, }}", f"{huge}}}")
    before = Run.objects.count()
    response = api.post("/api/runs/", body, content_type="application/json")
    assert response.status_code in (201, 400), response.content[:500]
    if response.status_code == 400:
        assert isinstance(response.json()["message"], str)
        assert Run.objects.count() == before
        return
    run = Run.objects.get(pk=response.json()["id"])
    sent = json.loads(body)
    # DRF trims a prompt's surrounding whitespace (as it always has).
    assert run.prompt == sent["prompt"].strip()
    assert same(sent["steps"][0]["args"], run.plan[0]["args"])
    assert same(sent["steps"][0]["args"], api.get(f"/api/runs/{run.id}/").json()["plan"][0]["args"])


# --- The web form ----------------------------------------------------------------------

row_numbers = st.one_of(
    st.integers(min_value=0, max_value=60).map(str),
    st.sampled_from(["99999999999", "9" * 5000, "-1", "1_0", "\u0661", ""]),
)


@EXAMPLES
@given(
    prompt=texts,
    key=texts,
    value=texts,
    seconds=st.one_of(texts, st.sampled_from(["1e999", "nan", "-0", "0.5", "60.000001", "\u0661"])),
    extra=st.lists(st.tuples(row_numbers, texts), max_size=4),
)
def test_the_web_form_refuses_or_stores_what_it_was_sent(
    client, user, dispatched, prompt, key, value, seconds, extra
):
    client.force_login(user)
    fields = [
        ("prompt", prompt),
        ("step-0-tool", "echo"),
        ("step-0-any-echo-name", key),
        ("step-0-any-echo-value", value),
        ("step-1-tool", "wait"),
        ("step-1-arg-wait-seconds", seconds),
    ]
    fields += [(f"step-{row}-x", text) for row, text in extra]
    before = Run.objects.count()
    response = post_form(client, "/runs/new/", fields)
    assert response.status_code in (302, 400)
    if response.status_code == 400:
        page = response.content.decode()
        assert 'id="form-error"' in page
        assert page.split('id="step-template"')[0].count('<fieldset class="step"') <= (
            django_settings.RUNS_MAX_STEPS + 1
        )
        assert Run.objects.count() == before
        return
    run = newest_run_since(before)
    assert run is not None and run.prompt == as_received(prompt)
    echo = run.plan[0]["args"]
    name = as_received(key).strip()
    assert echo == ({name: as_received(value)} if name else {})


# --- The admin's add form --------------------------------------------------------------


@EXAMPLES
@given(
    prompt=texts,
    plan=st.one_of(
        st.lists(
            st.fixed_dictionaries({"tool": st.just("echo"), "args": json_values}), min_size=1, max_size=3
        ).map(json.dumps),
        json_values.map(json.dumps),
        texts,
        st.integers(min_value=0, max_value=6000).map(
            lambda depth: '[{"tool": "echo", "args": {"a": ' + "[" * depth + "]" * depth + "}}]"
        ),
    ),
)
def test_the_admin_refuses_or_stores_what_it_was_sent(client, staff_user, user, dispatched, prompt, plan):
    client.force_login(staff_user)
    fields = [("owner", str(user.pk)), ("prompt", prompt), ("plan", plan), *inline_management_empty().items()]
    before = Run.objects.count()
    response = post_form(client, "/admin/runs/run/add/", fields)
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert "errornote" in response.content.decode()
        assert Run.objects.count() == before
        return
    run = newest_run_since(before)
    assert run is not None
    # Django's form fields strip the prompt.
    assert run.prompt == as_received(prompt).strip()
    assert same(json.loads(as_received(plan)), run.plan)
