"""The Content-Security-Policy in a real browser: every page, the admin's, Swagger UI and the
staff Realtime page run under a strict policy (no 'unsafe-inline' scripts) with no violation
reported — neither a `securitypolicyviolation` event nor a console message.

Chromium under Playwright against a real Daphne on PostgreSQL and Redis.
"""

from __future__ import annotations

import re

import pytest

from runs import services
from tests.processes import daphne_server, free_port, subprocess_env
from tests.web.test_browser import PASSWORD, WAIT_MS, log_in, shot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

# Every violation the page reports, kept across the page's own scripts.
VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture
def server():
    with daphne_server(env=subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE=""), port=free_port()) as running:
        yield running


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="root", password=PASSWORD, is_staff=True, is_superuser=True
    )


def strict_page(browser, base_url: str, console: list[str]):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.add_init_script(VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    return page


def visit(page, path: str, ready: str) -> str:
    """Open ``path``, wait for ``ready`` (a sign its scripts ran), return its CSP header."""
    response = page.goto(path)
    assert response.status < 400, (path, response.status)
    page.wait_for_selector(ready)
    page.wait_for_load_state("networkidle")
    violations = page.evaluate("window.__violations")
    assert violations == [], (path, violations)
    return response.headers.get("content-security-policy", "")


def test_every_page_runs_under_a_strict_policy_without_a_violation(browser, server, staff):
    run = services.run_create(
        owner=staff, steps=[{"tool": "echo", "args": {"text": "hi"}}], prompt="csp check"
    )
    console: list[str] = []
    page = strict_page(browser, server.url, console)
    pages = [
        ("/login/", "#id_username"),
    ]
    policies = {path: visit(page, path, ready) for path, ready in pages}
    log_in(page, staff)
    pages = [
        ("/", ".hero"),
        ("/runs/", "#connection[data-state]"),
        ("/runs/new/", "#step-0-tool"),
        (f"/runs/{run.id}/", "[data-field=steps] tr"),
        ("/admin/", "#observability-module"),
        ("/admin/runs/run/", "#live-connection[data-state]"),
        (f"/admin/runs/run/{run.id}/change/", "[data-field=steps] tr"),
        ("/admin/runs/run/add/", "#id_plan"),
        ("/admin/realtime/", "#rt-workers tbody tr"),
        ("/account/token/", "main form.token-action"),
        # Swagger UI drew the operations: its bundle and start-up script ran.
        ("/api/docs/", ".opblock"),
    ]
    for path, ready in pages:
        policies[path] = visit(page, path, ready)
        name = re.sub(r"[^a-z]+", "-", path.replace(str(run.id), "run")).strip("-")
        shot(page, f"csp-{name or 'home'}")
    for path, policy in policies.items():
        script_src = re.search(r"script-src ([^;]*)", policy)
        assert script_src, (path, policy)
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (path, policy)
        assert script_src.group(1).split()[0] == "'self'", (path, policy)
    reported = [line for line in console if "Content Security Policy" in line or "pageerror" in line]
    assert reported == [], reported
