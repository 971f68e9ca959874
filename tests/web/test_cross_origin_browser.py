"""docs/protocol.md's page on another origin, in a real browser: Chromium, a real Daphne and worker.

The page is served by a second server on another port of 127.0.0.1 — another
origin (though the same site) — and does what the docs' component does: it
imports the client from the API server, takes a ticket per connection with
POST /api/ws-tickets/ and a token in the Authorization header (a preflighted
request), and watches a run and the run list. With the page's origin in the
server's CORS_ALLOWED_ORIGINS it follows the run live to completion (over the
socket, or over HTTP when WebSockets are blocked); without it the browser
refuses every API answer to the page, no ticket is ever issued, and the page
shows the client's reconnecting state with its reason. Screenshots go to
test-artifacts/browser/.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from realtime.models import ConnectionTicket
from runs import services
from runs.models import Run
from tests.processes import Server, celery_worker, daphne_server, subprocess_env
from tests.web.test_browser import WAIT_MS, shot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

# The docs' component without a framework: the same calls, the state written into the page.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another origin</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem; }
  #conn { font-weight: bold; } #reason { color: #a33; }
</style></head>
<body>
<h1>A page on another origin</h1>
<p>Run <output id="status">…</output> <span id="progress"></span></p>
<p>Connection: <span id="conn">…</span> <span id="mode"></span></p>
<p id="reason"></p>
<h2>Runs</h2><ul id="runs"></ul>
<script type="module">
  const config = __CONFIG__;
  const API = config.api;
  const { watchRun, watchRuns, runProgress } = await import(`${API}/static/realtime/quikday-realtime.js`);
  const auth = { Authorization: `Token ${config.token}` };
  const ticket = async () =>
    (await (await fetch(`${API}/api/ws-tickets/`, { method: "POST", headers: auth })).json()).ticket;
  const timing = { maxDelayMs: 2000, socketRetryMs: 2000, pollIntervalMs: 500 };
  const $ = (id) => document.getElementById(id);
  window.__frames = [];  // every applied change: [seq, transport]
  watchRun(config.runId, {
    ...timing, baseUrl: API, ticket, headers: auth,
    onFrame: (frame, transport) => window.__frames.push([frame.seq, transport]),
    onChange: (run) => {
      const p = runProgress(run);
      $("status").textContent = run.status;
      $("status").dataset.status = run.status;
      $("progress").textContent = `${p.succeeded}/${p.total} steps`;
    },
    onStatus: (s) => {
      $("conn").textContent = s.state;
      $("conn").dataset.state = s.state;
      $("mode").textContent = s.mode ? `(${s.mode})` : "";
      $("reason").textContent = s.reason && s.reason !== "finished" ? s.reason : "";
    },
  });
  watchRuns({
    ...timing, baseUrl: API, ticket, headers: auth,
    onChange: (runs) => {
      $("runs").replaceChildren(...[...runs.values()].map((r) => {
        const li = document.createElement("li");
        li.dataset.runId = r.id;
        li.dataset.status = r.status;
        li.textContent = `${r.prompt || r.id}: ${r.status}`;
        return li;
      }));
    },
  });
</script>
</body></html>
"""


class _AppPage(BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.replace("__CONFIG__", json.dumps(self.server.config)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # the test's output stays the test's
        pass


@contextmanager
def app_origin() -> Iterator[ThreadingHTTPServer]:
    """The second origin: a plain HTTP server on another port of 127.0.0.1 serving PAGE."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppPage)
    server.origin = f"http://127.0.0.1:{server.server_address[1]}"
    server.config = {}
    thread = threading.Thread(target=server.serve_forever, name="app-origin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def api_server(allowed: str) -> Iterator[tuple[Server, dict[str, str]]]:
    """A Daphne on the test database whose CORS_ALLOWED_ORIGINS is ``allowed``, and its env."""
    env = subprocess_env(DJANGO_ALLOW_ASYNC_UNSAFE="", CORS_ALLOWED_ORIGINS=allowed)
    with daphne_server(env=env) as server:
        yield server, env


@pytest.fixture(scope="module")
def app() -> Iterator[ThreadingHTTPServer]:
    with app_origin() as server:
        yield server


@pytest.fixture(scope="module")
def allowing(django_db_setup, app) -> Iterator[tuple[Server, dict[str, str]]]:
    """The API server with the app's origin allowed, shared by the module's tests (a start costs seconds)."""
    with api_server(allowed=app.origin) as started:
        yield started


@contextmanager
def app_page(browser, app, server, token: str, run: Run):
    """A fresh browser context (no cookies of any origin) on the app's page, watching ``run``."""
    app.config.update(api=server.url.rstrip("/"), token=token, runId=str(run.id))
    context = browser.new_context(viewport={"width": 900, "height": 600})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        yield page
    finally:
        context.close()


def frames(page) -> list[list]:
    return page.evaluate("window.__frames")


def queued_run(owner) -> Run:
    """A run sent to the queue before any worker runs: the page is live before it starts."""
    steps = [{"tool": "wait", "args": {"seconds": 0.5}}] * 3
    return services.run_create(owner=owner, steps=steps, prompt="cors")


def test_a_page_on_an_allowed_origin_takes_tickets_and_watches_a_run_live(
    browser, app, allowing, user, token
):
    server, env = allowing
    run = queued_run(user)
    with app_page(browser, app, server, token, run) as page:
        page.goto(app.origin)
        page.wait_for_selector('#conn[data-state="live"]')
        assert page.text_content("#status") == "queued"
        page.wait_for_selector(f'#runs li[data-run-id="{run.id}"][data-status="queued"]')
        assert page.text_content("#mode") == "(push)"
        with celery_worker(env=env):
            page.wait_for_selector('#status[data-status="succeeded"]')
            page.wait_for_selector(f'#runs li[data-run-id="{run.id}"][data-status="succeeded"]')
        shot(page, "cross-origin-live")
        run.refresh_from_db()
        seen = frames(page)
        # The snapshot at seq 0 (queued), then every event once, in order, all over the socket.
        assert [seq for seq, _ in seen] == list(range(run.seq + 1))
        assert {transport for _, transport in seen} == {"websocket"}
        assert page.text_content("#conn") == "closed"
        assert page.text_content("#progress") == "3/3 steps"


def test_a_page_on_an_allowed_origin_polls_through_cors_when_websockets_are_blocked(
    browser, app, allowing, user, token
):
    server, env = allowing
    run = queued_run(user)
    with app_page(browser, app, server, token, run) as page:
        page.route_web_socket(re.compile(r".*/ws/.*"), lambda ws: ws.close(code=1011, reason="blocked"))
        page.goto(app.origin)
        page.wait_for_selector('#conn[data-state="polling"]')
        assert page.text_content("#mode") == "(http)"
        with celery_worker(env=env):
            page.wait_for_selector('#status[data-status="succeeded"]')
        run.refresh_from_db()
        seen = frames(page)
        assert [seq for seq, _ in seen] == list(range(run.seq + 1))
        assert {transport for _, transport in seen} == {"http"}


def test_the_same_page_against_a_server_that_does_not_allow_its_origin_says_so(
    browser, app, user, token, dispatched
):
    run = queued_run(user)
    with api_server(allowed="") as (server, _), app_page(browser, app, server, token, run) as page:
        failed = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(app.origin)
        page.wait_for_selector('#conn[data-state="reconnecting"]')
        reason = page.wait_for_selector("#reason:has-text('CORS_ALLOWED_ORIGINS')").text_content()
        assert reason == (
            "no answer over HTTP: the server is down or unreachable, "
            "or it does not allow this page's origin (CORS_ALLOWED_ORIGINS)"
        )
        shot(page, "cross-origin-refused")
        assert page.text_content("#status") == "…"  # nothing of the run reached the page
        assert page.query_selector_all("#runs li") == []
        assert f"{server.url.rstrip('/')}/api/ws-tickets/" in failed
        # The preflight was refused, so the POST was never sent: no ticket was issued.
        assert ConnectionTicket.objects.count() == 0
