"""A newcomer's pages in Chromium: the API token page, and the API docs' words and example.

Against a real Daphne on the test database (the browser fixture: tests/web/conftest.py).
Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from rest_framework.authtoken.models import Token

from tests.processes import daphne_server, subprocess_env
from tests.web.test_browser import PASSWORD, log_in, new_page, shot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


@pytest.fixture
def server():
    with daphne_server(env=subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE="")) as running:
        yield running


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user(username="bob", password=PASSWORD)


def api_status(url: str, key: str, *, body: dict | None = None) -> int:
    headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_user_creates_sees_once_regenerates_and_revokes_their_token(browser, server, bob):
    page = new_page(browser, server.url)
    log_in(page, bob)
    page.get_by_role("link", name="API token").click()
    page.wait_for_url("**/account/token/")
    assert page.get_by_text("You have no API token.").is_visible()

    page.get_by_role("button", name="Create a token").click()
    key = page.locator("[data-field=token-key]").inner_text()
    shot(page, "api-token-created")
    assert key == Token.objects.get(user=bob).key
    assert api_status(f"{server.url}/api/tools/", key) == 200

    page.goto("/account/token/")  # later: only a hint
    assert page.locator("[data-field=token-key]").count() == 0
    assert (
        page.locator("[data-field=token-hint]")
        .inner_text()
        .startswith(f"You have a token starting {key[:4]}…")
    )
    assert key not in page.content()
    shot(page, "api-token-hint")

    page.get_by_role("button", name="Regenerate").click()
    new_key = page.locator("[data-field=token-key]").inner_text()
    assert new_key != key
    assert api_status(f"{server.url}/api/tools/", key) == 401
    assert api_status(f"{server.url}/api/tools/", new_key) == 200

    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("Your API token is revoked.").wait_for()
    assert page.get_by_text("You have no API token.").is_visible()
    assert api_status(f"{server.url}/api/tools/", new_key) == 401


def test_the_api_docs_show_the_websocket_path_and_a_run_that_works(browser, server, bob):
    page = new_page(browser, server.url)
    page.goto("/api/docs/")
    description = page.locator(".info .description")
    description.wait_for()
    assert "/ws/runs/<id>/" in description.inner_text()

    create = page.locator("#operations-runs-runs_create")
    create.locator(".opblock-summary").click()
    create.get_by_role("button", name="Try it out").click()
    prefilled = json.loads(create.locator("textarea.body-param__text").input_value())
    shot(page, "api-docs-try-it-out")
    assert isinstance(prefilled["steps"], list) and prefilled["steps"]
    key = Token.objects.create(user=bob).key
    assert api_status(f"{server.url}/api/runs/", key, body=prefilled) == 201
