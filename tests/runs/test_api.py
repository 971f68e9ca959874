"""The REST API: create, list, detail, cancel, auth, and every bad input (a 4xx JSON, never a 500)."""

import json
import uuid

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from runs import services
from runs.dispatch import _send as REAL_SEND  # imported before any fixture replaces it
from runs.models import Run, Step

pytestmark = pytest.mark.django_db

ECHO3 = [{"tool": "echo", "args": {"n": i}} for i in range(3)]


@pytest.fixture
def sent(monkeypatch):
    """Runs dispatched once the creating transaction commits (see post_json)."""
    captured = []
    monkeypatch.setattr("runs.dispatch._send", captured.append)
    return captured


@pytest.fixture(autouse=True)
def _commit_callbacks(django_capture_on_commit_callbacks):
    global _capture
    _capture = django_capture_on_commit_callbacks
    yield
    _capture = None


_capture = None


def post_json(client, url, body, **extra):
    """POST ``body`` (bytes as they are, anything else as JSON), running on-commit callbacks."""
    raw = body if isinstance(body, bytes) else json.dumps(body)
    with _capture(execute=True):
        return client.post(url, raw, content_type="application/json", **extra)


def assert_error(response, status, error=None, contains=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"]
    if error is not None:
        assert body["error"] == error, body
    if contains is not None:
        assert contains in body["message"], body
    return body


# --- Create ---------------------------------------------------------------------------


def test_create_answers_201_with_the_queued_run(api, user, sent):
    response = post_json(api, "/api/runs/", {"prompt": "three", "steps": ECHO3})
    assert response.status_code == 201, response.content
    body = response.json()
    run_id = uuid.UUID(body["id"])
    assert body["status"] == "queued"
    assert body["owner"] == user.username
    assert body["prompt"] == "three"
    assert body["plan"] == ECHO3
    assert body["steps"] == []  # created as the run executes
    assert body["ws_url"] == f"/ws/runs/{run_id}/"
    assert body["seq"] == 0
    assert Run.objects.get(pk=run_id).owner == user
    assert sent == [run_id]


def test_create_without_prompt_and_args_fills_defaults(api, sent):
    response = post_json(api, "/api/runs/", {"steps": [{"tool": "echo"}, {"tool": "fail"}]})
    assert response.status_code == 201
    assert response.json()["prompt"] == ""
    # An empty prompt, as a form with its prompt left blank sends it, is no prompt either.
    assert post_json(api, "/api/runs/", {"prompt": "", "steps": ECHO3}).json()["prompt"] == ""
    assert response.json()["plan"][1] == {"tool": "fail", "args": {"message": "failed on purpose"}}


BAD_BODIES = [
    ({"steps": [{"tool": "nope"}]}, "invalid_plan", "unknown tool 'nope'"),
    (
        {"steps": [{"tool": "wait", "args": {"seconds": "3"}}]},
        "invalid_plan",
        "must be a number, got a string",
    ),
    ({"steps": [{"tool": "wait", "args": {"seconds": True}}]}, "invalid_plan", "got a boolean"),
    ({"steps": [{"tool": "wait", "args": {"seconds": 1e9}}]}, "invalid_plan", "must be at most"),
    ({"steps": [{"tool": "wait"}]}, "invalid_plan", "needs argument 'seconds'"),
    ({"steps": [{"tool": "wait", "args": {"seconds": 1, "x": 2}}]}, "invalid_plan", "has no argument 'x'"),
    ({"steps": []}, "invalid_plan", "at least one step"),
    ({"steps": {"tool": "echo"}}, "invalid_plan", "steps must be a list"),
    ({"steps": "echo"}, "invalid_plan", "steps must be a list"),
    ({"steps": 7}, "invalid_plan", "steps must be a list"),  # no len(): the count's check is for lists
    ({"steps": None}, None, "steps"),
    ({"steps": ["echo"]}, "invalid_plan", "step 1: a step must be an object"),
    ({"steps": [[]]}, "invalid_plan", "a step must be an object"),
    ({"steps": [{"tool": "echo", "args": "x"}]}, "invalid_plan", "must be an object"),
    ({"steps": [{"tool": "echo", "args": {"t": "a\u0000b"}}]}, "invalid_plan", "NUL"),
    (b'{"steps": [{"tool": "echo", "args": {"t": 1e999}}]}', "invalid", "steps"),
    ({"prompt": "no steps"}, "invalid", "steps"),
    ({"prompt": 5, "steps": ECHO3}, None, None),
    ({"prompt": None, "steps": ECHO3}, "invalid", "prompt"),
    ({"prompt": "a\u0000b", "steps": ECHO3}, "invalid", "prompt"),
    ({"prompt": "x" * 20_001, "steps": ECHO3}, "invalid", "prompt"),
    ([], "invalid", None),
    ("just a string", "invalid", None),
    (42, "invalid", None),
    (None, "invalid", None),
]


@pytest.mark.parametrize(("body", "error", "contains"), BAD_BODIES)
def test_bad_input_is_a_400_naming_the_problem_and_creates_nothing(api, sent, body, error, contains):
    if body == {"prompt": 5, "steps": ECHO3}:
        # DRF coerces a number to a string prompt: accepted, not a 500.
        assert post_json(api, "/api/runs/", body).status_code == 201
        return
    response = post_json(api, "/api/runs/", body)
    assert_error(response, 400, error, contains)
    assert Run.objects.count() == 0 and Step.objects.count() == 0
    assert sent == []


def test_plan_error_names_the_step_and_field(api):
    body = assert_error(
        post_json(
            api, "/api/runs/", {"steps": [{"tool": "echo"}, {"tool": "wait", "args": {"seconds": -1}}]}
        ),
        400,
    )
    assert (body["error"], body["step"], body["field"]) == ("invalid_plan", 1, "seconds")
    assert body["message"] == "step 2: argument 'seconds' must be at least 0, got -1"


def test_too_many_steps_follows_the_setting(api, settings, sent):
    settings.RUNS_MAX_STEPS = 3
    assert_error(
        post_json(api, "/api/runs/", {"steps": [{"tool": "echo"}] * 4}),
        400,
        contains="at most 3 steps, got 4",
    )
    assert Run.objects.count() == 0
    assert post_json(api, "/api/runs/", {"steps": [{"tool": "echo"}] * 3}).status_code == 201


def test_default_maximum_is_50_steps(api, sent):
    assert_error(
        post_json(api, "/api/runs/", {"steps": [{"tool": "echo"}] * 51}), 400, contains="at most 50 steps"
    )
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"steps": [}', b"\xff\xfe", b"", b"NaN", b'{"steps": [{"tool": "echo", "args": {"x": NaN}}]}'],
)
def test_malformed_json_is_a_400(api, sent, raw):
    response = post_json(api, "/api/runs/", raw)
    assert_error(response, 400)
    assert Run.objects.count() == 0


def test_deeply_nested_json_is_a_400_not_a_500(api, sent):
    raw = b'{"steps": [{"tool": "echo", "args": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}]}"
    assert_error(post_json(api, "/api/runs/", raw), 400, "malformed_json")
    assert Run.objects.count() == 0


@pytest.mark.parametrize("siblings", [0, 100], ids=["alone", "after-shallow-siblings"])
def test_a_body_nested_512_levels_is_parsed_and_513_refused_unparsed(api, sent, siblings):
    """JSON_MAX_DEPTH counts the whole document (here 4 levels down to args' value), before parsing."""

    def body(levels: int) -> bytes:
        value = b"[" + b"[], " * siblings + b"[" * (levels - 5) + b"]" * (levels - 5) + b"]"
        return b'{"steps": [{"tool": "echo", "args": {"x": ' + value + b"}}]}"

    # Parsed: the plan's own (smaller) nesting limit then refuses it.
    assert_error(post_json(api, "/api/runs/", body(512)), 400, "invalid_plan", "nested more than")
    assert_error(
        post_json(api, "/api/runs/", body(513)), 400, "malformed_json", "nested more than 512 levels"
    )
    assert Run.objects.count() == 0


def test_a_refused_field_is_named_first_and_detailed(api, sent):
    body = assert_error(post_json(api, "/api/runs/", {"prompt": None, "steps": ECHO3}), 400, "invalid")
    assert body["message"] == "prompt: This field may not be null."
    assert body["detail"] == {"prompt": ["This field may not be null."]}  # every field's, for a program
    assert "detail" not in assert_error(api.get(f"/api/runs/{uuid.uuid4()}/"), 404, "not_found")


def test_a_request_for_another_host_is_a_json_400(client):
    """Django's own refusals (here DisallowedHost, before any view) answer JSON like the API's."""
    response = client.get("/api/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["message"].startswith("Invalid HTTP_HOST header: 'evil.example'.")


def test_a_body_over_the_limit_is_a_400(api, sent):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048):
        big = {"prompt": "x" * 3000, "steps": ECHO3}
        assert_error(post_json(api, "/api/runs/", big), 400, "body_too_large", "2048 byte limit")
        assert post_json(api, "/api/runs/", {"prompt": "x" * 100, "steps": ECHO3}).status_code == 201
    assert Run.objects.count() == 1


def test_a_body_of_exactly_the_limit_is_read(api, sent):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048):
        shell = json.dumps({"prompt": "", "steps": ECHO3})
        body = json.dumps({"prompt": "x" * (2048 - len(shell)), "steps": ECHO3})
        assert len(body.encode()) == 2048
        assert api.post("/api/runs/", body, content_type="application/json").status_code == 201
        over = json.dumps({"prompt": "x" * (2049 - len(shell)), "steps": ECHO3})
        assert_error(api.post("/api/runs/", over, content_type="application/json"), 400, "body_too_large")
    assert Run.objects.count() == 1


def test_a_body_is_read_in_the_charset_it_declares(api, sent):
    body = json.dumps({"prompt": "café", "steps": ECHO3}, ensure_ascii=False).encode("latin-1")
    response = api.post("/api/runs/", body, content_type="application/json; charset=iso-8859-1")
    assert response.status_code == 201, response.content
    assert Run.objects.get().prompt == "café"
    # The same bytes declared as (or defaulting to) UTF-8 are not UTF-8 text: a 400, nothing created.
    response = api.post("/api/runs/", body, content_type="application/json")
    assert_error(response, 400, "malformed_json", "the body is not UTF-8 text")
    assert Run.objects.count() == 1


def test_the_default_body_limit_is_256_kib(api, sent):
    big = {"prompt": "", "steps": [{"tool": "echo", "args": {"pad": "x" * 300_000}}]}
    assert_error(post_json(api, "/api/runs/", big), 400, "body_too_large", f"{256 * 1024} byte limit")
    assert Run.objects.count() == 0


def test_a_form_body_is_refused(api, sent):
    response = api.post("/api/runs/", {"steps": "x"}, format="multipart")
    assert_error(response, 415, "unsupported_media_type")
    assert Run.objects.count() == 0


# --- List and detail --------------------------------------------------------------------


def test_list_shows_own_runs_newest_first(api, user, other_user, make_run):
    mine = [make_run(prompt=f"mine {i}") for i in range(3)]
    make_run(owner=other_user, prompt="theirs")
    response = api.get("/api/runs/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [str(r.id) for r in reversed(mine)]
    first = body["results"][0]
    assert first["steps_total"] == 3 and "steps" not in first
    assert first["ws_url"] == f"/ws/runs/{mine[-1].id}/"


def test_list_is_paginated(api, make_run):
    for _ in range(23):
        make_run(steps=[{"tool": "echo"}])
    page1 = api.get("/api/runs/").json()
    assert (page1["count"], len(page1["results"]), page1["previous"]) == (23, 20, None)
    assert page1["next"].endswith("/api/runs/?page=2")
    page2 = api.get("/api/runs/?page=2").json()
    assert len(page2["results"]) == 3 and page2["next"] is None
    assert not {r["id"] for r in page1["results"]} & {r["id"] for r in page2["results"]}
    assert_error(api.get("/api/runs/?page=9"), 404)
    assert_error(api.get("/api/runs/?page=x"), 404)


def test_list_filters_by_status(api, make_run):
    queued = make_run("queued")
    failed = make_run("failed")
    make_run("succeeded")
    assert [r["id"] for r in api.get("/api/runs/?status=queued").json()["results"]] == [str(queued.id)]
    assert [r["id"] for r in api.get("/api/runs/?status=failed").json()["results"]] == [str(failed.id)]
    assert api.get("/api/runs/?status=cancelled").json()["count"] == 0


def test_list_with_an_empty_status_is_not_filtered(api, make_run):
    make_run("failed")
    make_run()
    assert api.get("/api/runs/?status=").json()["count"] == 2


def test_list_with_a_bad_status_is_a_400(api):
    body = assert_error(api.get("/api/runs/?status=bogus"), 400, "invalid", "status")
    assert "bogus" in body["message"]


def test_staff_see_everyone_s_runs(staff_user, user, other_user, make_run):
    a, b = make_run(owner=user), make_run(owner=other_user)
    client = APIClient()
    client.force_authenticate(staff_user)
    assert {r["id"] for r in client.get("/api/runs/").json()["results"]} == {str(a.id), str(b.id)}
    assert client.get(f"/api/runs/{b.id}/").status_code == 200
    assert client.post(f"/api/runs/{b.id}/cancel/").status_code == 200


def test_detail_shows_the_run_with_its_steps_in_order(api, make_run):
    run = make_run("processing")
    services.step_start(run_id=run.id, index=0)
    services.step_succeed(run_id=run.id, index=0, output={"n": 0})
    services.step_start(run_id=run.id, index=1)
    body = api.get(f"/api/runs/{run.id}/").json()
    assert body["id"] == str(run.id) and body["status"] == "processing"
    assert [(s["index"], s["status"], s["output"]) for s in body["steps"]] == [
        (0, "succeeded", {"n": 0}),
        (1, "running", None),
    ]
    assert body["started_at"].endswith("Z")


def test_someone_else_s_run_is_a_404(api, other_user, make_run):
    run = make_run(owner=other_user)
    assert_error(api.get(f"/api/runs/{run.id}/"), 404, "not_found")
    assert_error(api.post(f"/api/runs/{run.id}/cancel/"), 404, "not_found")
    assert Run.objects.get(pk=run.id).status == "queued"
    assert api.get("/api/runs/").json()["count"] == 0


UNKNOWN_RUN_ID = uuid.UUID("6a1f3c2e-9b4d-4e8a-8c71-2f5d0e9b7a13")


@pytest.mark.parametrize(
    "url",
    [
        "/api/runs/not-a-uuid/",
        "/api/runs/12345/",
        "/api/runs/not-a-uuid/cancel/",
        # A well-formed id no run has; fixed, so that every xdist worker collects the same tests.
        f"/api/runs/{UNKNOWN_RUN_ID}/",
        f"/api/runs/{UNKNOWN_RUN_ID}/cancel/",
        "/api/nothing-here/",
        "/api/runs/x/y/z/",
    ],
)
def test_unknown_or_malformed_urls_are_json_404s(api, url):
    method = api.post if url.endswith("cancel/") else api.get
    assert_error(method(url), 404, "not_found")


def test_a_wrong_method_is_a_405(api, make_run):
    run = make_run()
    assert_error(api.delete(f"/api/runs/{run.id}/"), 405, "method_not_allowed")
    assert_error(api.put("/api/runs/", {}, format="json"), 405)
    assert_error(api.get(f"/api/runs/{run.id}/cancel/"), 405)


# --- Cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_run(api, make_run):
    run = make_run()
    response = api.post(f"/api/runs/{run.id}/cancel/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert [s["status"] for s in body["steps"]] == ["skipped"] * 3


def test_cancel_a_processing_run_is_accepted_and_pending(api, make_run):
    run = make_run("processing")
    response = api.post(f"/api/runs/{run.id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    assert Run.objects.get(pk=run.id).cancel_requested_at is not None


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_run_is_a_409(api, make_run, status):
    run = make_run(status)
    body = assert_error(api.post(f"/api/runs/{run.id}/cancel/"), 409, "conflict", "cannot be cancelled")
    assert body["status"] == status
    assert Run.objects.get(pk=run.id).status == status


# --- Authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", "/api/runs/"), ("post", "/api/runs/"), ("get", "/api/tools/"), ("get", "/api/runs/{id}/")],
)
def test_unauthenticated_is_refused_with_json(client, make_run, method, url):
    run = make_run()
    response = getattr(client, method)(url.format(id=run.id), content_type="application/json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert Run.objects.count() == 1


def test_token_auth_header(token, user, sent):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = post_json(client, "/api/runs/", {"steps": ECHO3})
    assert response.status_code == 201
    assert Run.objects.get().owner == user
    assert client.get("/api/runs/").json()["count"] == 1


def test_a_bad_token_is_refused(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = client.get("/api/runs/")
    assert_error(response, 401, "authentication_failed")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token ", "No credentials provided"),
        ("Token a b", "should not contain spaces"),
        ("Token abc\x00def", "Invalid token."),  # PostgreSQL can't even look a NUL up
        ("Token " + "f" * 5000, "Invalid token."),
        ("Token \u00e9", "invalid characters"),
    ],
)
def test_malformed_token_headers_are_refused_not_500(user, header, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/runs/")
    assert_error(response, 401, "authentication_failed", message)


def test_an_unknown_scheme_is_unauthenticated(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer x")
    assert_error(client.get("/api/runs/"), client.get("/api/runs/").status_code, "not_authenticated")


@pytest.mark.parametrize(
    "query", ["status=%00", "page=%00", "page=1e400", f"page={10**30}", "status=queued&status=x"]
)
def test_odd_query_strings_are_4xx(api, make_run, query):
    make_run()
    response = api.get(f"/api/runs/?{query}")
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)


def test_session_auth_enforces_csrf_on_post(user, sent):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-alice-123")
    assert client.get("/api/runs/").status_code == 200  # reads need no token

    refused = post_json(client, "/api/runs/", {"steps": ECHO3})
    assert_error(refused, 403, "permission_denied", "CSRF")
    assert Run.objects.count() == 0

    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    accepted = post_json(client, "/api/runs/", {"steps": ECHO3}, HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 201, accepted.content
    assert Run.objects.get().owner == user


def test_drf_create_token_command_issues_a_key(user):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("drf_create_token", "alice", stdout=out)
    key = out.getvalue().split()[2]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/runs/").status_code == 200


# --- Schema -----------------------------------------------------------------------------------


def test_openapi_schema(api):
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/runs/", "/api/runs/{run_id}/", "/api/runs/{run_id}/cancel/", "/api/tools/"} <= set(
        schema["paths"]
    )
    status_param = next(
        p for p in schema["paths"]["/api/runs/"]["get"]["parameters"] if p["name"] == "status"
    )
    assert set(status_param["schema"]["enum"]) == {"queued", "processing", "succeeded", "failed", "cancelled"}


def test_the_realtime_endpoints_document_the_success_they_answer(api, user, dispatched):
    """Each one's documented 2xx response is the one it answers, with its body's shape."""
    paths = api.get("/api/schema/?format=json").json()["paths"]
    run = services.run_create(owner=user, steps=[{"tool": "echo", "args": {}}])
    any_object = {"type": "object", "additionalProperties": {}}
    for path, method, answered, body in [
        ("/api/ws-tickets/", "post", api.post("/api/ws-tickets/"), {"$ref": "#/components/schemas/WsTicket"}),
        ("/api/run-summaries/", "get", api.get("/api/run-summaries/"), any_object),
        ("/api/runs/{run_id}/events/", "get", api.get(f"/api/runs/{run.id}/events/"), any_object),
    ]:
        responses = paths[path][method]["responses"]
        assert [code for code in responses if code.startswith("2")] == [str(answered.status_code)], path
        assert responses[str(answered.status_code)]["content"]["application/json"]["schema"] == body, path
    assert "requestBody" not in paths["/api/ws-tickets/"]["post"]  # a ticket is asked for with no body


def test_openapi_schema_default_format(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi:" in response.content or b'"openapi"' in response.content


def test_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/runs/{run_id}/cancel/" in target.read_text()


def test_a_broker_failure_at_dispatch_still_answers_201_and_leaves_the_run_queued(api, monkeypatch, caplog):
    from kombu.exceptions import OperationalError

    from runs import tasks

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("runs.dispatch._send", REAL_SEND)  # the real one, around a failing broker
    monkeypatch.setattr(tasks.execute_run, "apply_async", broker_down)
    monkeypatch.setattr("django.conf.settings.RUNS_EXECUTOR", "celery")
    response = post_json(api, "/api/runs/", {"steps": ECHO3})
    assert response.status_code == 201
    assert Run.objects.get().status == "queued"  # the reaper dispatches it again later
    assert "could not enqueue run" in caplog.text
