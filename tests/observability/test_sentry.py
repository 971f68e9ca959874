"""Sentry: off without a DSN; with one, a view's exception reaches it, scrubbed.

The DSN points at a fake Sentry on a loopback port of this test: no call leaves the machine.
"""

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk

from observability import sentry

pytestmark = pytest.mark.django_db


class _FakeSentry(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_sentry():
    _FakeSentry.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSentry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        sentry_sdk.init()  # no DSN: reporting off again for the rest of the session
        server.shutdown()
        server.server_close()


def test_no_dsn_means_no_sentry():
    assert sentry.init(dsn="", environment="test") is False
    assert not sentry_sdk.get_client().is_active()


def test_a_views_exception_is_reported_scrubbed_with_django_and_celery_integrations(
    client, settings, fake_sentry
):
    port = fake_sentry.server_address[1]
    assert sentry.init(dsn=f"http://publickey@127.0.0.1:{port}/1", environment="test") is True
    active = sentry_sdk.get_client()
    assert {"django", "celery"} <= set(active.integrations)
    settings.ROOT_URLCONF = "tests.observability.sentry_urls"
    client.raise_request_exception = False
    response = client.get("/broken")
    assert response.status_code == 500
    sentry_sdk.flush(timeout=10)
    events = [line for body in fake_sentry.RequestHandlerClass.received for line in body.split(b"\n")]
    errors = [json.loads(line) for line in events if b'"exception"' in line]
    assert errors, events
    (error,) = errors
    (exception,) = error["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert "0123456789abcdef0123" not in json.dumps(error)
    assert "Authorization: [redacted]" in exception["value"]
