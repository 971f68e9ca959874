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
    assert api.post("/api/runs/", {"steps": steps["example"]}, format="json").status_code == 201


def test_the_schema_s_description_keeps_the_websocket_path_as_text():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    # Markdown (what Swagger UI renders) would take a bare <id> for an HTML tag: it is in a code span.
    assert "`/ws/runs/<id>/`" in schema["info"]["description"]
