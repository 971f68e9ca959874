"""The API's front door: GET /api/ (an index of links) and the OpenAPI schema's words and example."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(django_user_model):
    user = django_user_model.objects.create_user(username="newcomer", password="pw-api-docs-1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_api_root_is_an_index_of_links_that_work(api):
    anonymous = APIClient().get("/api/")
    assert anonymous.status_code == 200 and anonymous["Content-Type"] == "application/json"
    index = anonymous.json()
    assert index["docs"] == "http://testserver/api/docs/"
    assert index["schema"] == "http://testserver/api/schema/"
    for key in ("docs", "schema", "runs", "tools", "run_summaries"):
        assert api.get(index[key]).status_code == 200, key
    assert api.post(index["ws_tickets"]).status_code == 201


def test_the_schema_s_example_run_is_one_the_api_accepts(api, monkeypatch):
    monkeypatch.setattr("runs.dispatch._send", lambda run_id: None)
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    body = schema["paths"]["/api/runs/"]["post"]["requestBody"]["content"]["application/json"]
    (example,) = (entry["value"] for entry in body["examples"].values())
    created = api.post("/api/runs/", example, format="json")
    assert created.status_code == 201, created.json()
    assert Run.objects.get(id=created.json()["id"]).plan == example["steps"]
    # The field itself says what a plan is, and its own example is one too.
    steps = schema["components"]["schemas"]["RunCreate"]["properties"]["steps"]
    assert steps["type"] == "array" and steps["items"]["required"] == ["tool"]
    assert steps["items"]["properties"]["args"]["additionalProperties"] is True  # each tool its own
    assert api.post("/api/runs/", {"steps": steps["example"]}, format="json").status_code == 201


def test_the_schema_s_description_keeps_the_websocket_path_as_text():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    # Markdown (what Swagger UI renders) would take a bare <id> for an HTML tag: it is in a code span.
    assert "`/ws/runs/<id>/`" in schema["info"]["description"]


# Every status the API answers: its successes, the slash redirect, refusals, quotas, a lost database.
ANSWERED = {"200", "201", "308", "400", "401", "403", "404", "405", "406", "409", "415", "429", "503"}


def test_the_schema_documents_the_statuses_the_api_answers(api, monkeypatch):
    """Each status a client meets is the one the schema promises, with the shape it names."""
    monkeypatch.setattr("runs.dispatch._send", lambda run_id: None)
    paths = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    create = paths["/api/runs/"]["post"]["responses"]
    cancel = paths["/api/runs/{run_id}/cancel/"]["post"]["responses"]
    run_shape = {"schema": {"$ref": "#/components/schemas/Run"}}  # the example is the request's only

    created = api.post("/api/runs/", {"steps": [{"tool": "echo", "args": {}}]}, format="json")
    assert created.status_code == 201 and create["201"]["content"]["application/json"] == run_shape
    cancelled = api.post(f"/api/runs/{created.json()['id']}/cancel/")
    assert cancelled.status_code == 200 and cancel["200"]["content"]["application/json"] == run_shape
    again = api.post(f"/api/runs/{created.json()['id']}/cancel/")
    assert again.status_code == 409 and "409" in cancel
    # The one success each documents is the one it answers, and no status it never answers.
    assert set(create) | set(cancel) <= ANSWERED
    assert [code for code in create if code.startswith("2")] == ["201"]
    assert [code for code in cancel if code.startswith("2")] == ["200"]


def test_the_schema_gives_the_shapes_the_api_answers():
    """Tools come as a list; a run's every field is the server's (readOnly), never a client's to set."""
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    tools = schema["paths"]["/api/tools/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert tools == {"type": "array", "items": {"$ref": "#/components/schemas/Tool"}}
    for name in ("Run", "RunSummary"):
        fields = schema["components"]["schemas"][name]["properties"]
        assert [f for f, spec in fields.items() if not spec.get("readOnly")] == [], name
