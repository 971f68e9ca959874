"""The API over real HTTP, through a Daphne process: JSON answers, never a 500."""

import http.client
import json
import urllib.error
import urllib.request

import pytest

from runs.models import Run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]


def call(server, method, path, *, token=None, body=None, headers=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), json.loads(error.read())


def test_create_and_read_over_http(daphne_process, token):
    # No worker here: the run stays queued (its message is harmless to a later worker: the run is gone).
    status, ctype, body = call(
        daphne_process, "POST", "/api/runs/", token=token, body={"steps": [{"tool": "echo"}]}
    )
    assert (status, body["status"]) == (201, "queued")
    assert ctype.startswith("application/json")
    status, _, detail = call(daphne_process, "GET", f"/api/runs/{body['id']}/", token=token)
    assert (status, detail["id"]) == (200, body["id"])


BAD_REQUESTS = [
    ("POST", "/api/runs/", b"{", 400, "malformed_json"),
    ("POST", "/api/runs/", {"steps": [{"tool": "nope"}]}, 400, "invalid_plan"),
    ("POST", "/api/runs/", {"prompt": "x" * 300_000, "steps": [{"tool": "echo"}]}, 400, "body_too_large"),
    ("POST", "/api/runs/", b"[" * 50_000 + b"]" * 50_000, 400, "malformed_json"),
    ("GET", "/api/runs/not-a-uuid/", None, 404, "not_found"),
    ("GET", "/api/nothing/", None, 404, "not_found"),
    ("POST", "/api/runs/00000000-0000-0000-0000-000000000000/cancel/", None, 404, "not_found"),
]


def test_bad_requests_over_http_are_json_4xx(daphne_process, token):
    # One server for all the cases: starting Daphne is the slow part.
    for method, path, body, status, error in BAD_REQUESTS:
        got_status, ctype, got = call(daphne_process, method, path, token=token, body=body)
        assert (got_status, got["error"]) == (status, error), (method, path, got)
        assert ctype.startswith("application/json")
    # A chunked body declares no length; DRF then reads no body at all (so nothing is
    # created, and it is a 400 either way, never a 500).
    big = b'{"steps": [{"tool": "echo"}], "prompt": "' + b"x" * 300_000 + b'"}'
    status, got = chunked_post(daphne_process, "/api/runs/", token, big)
    assert status == 400 and got["error"] in ("body_too_large", "invalid"), got
    assert Run.objects.count() == 0


def chunked_post(server, path, token, body):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
        connection.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_unauthenticated_over_http(daphne_process):
    status, _, body = call(daphne_process, "GET", "/api/runs/")
    assert status == 401 and body["error"] == "not_authenticated"
