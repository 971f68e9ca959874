"""The API over real HTTP, through a Daphne process: JSON answers, never a 500."""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings

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
    # A chunked body declares no length: it is read (and size-checked) like any other.
    big = b'{"steps": [{"tool": "echo"}], "prompt": "' + b"x" * 300_000 + b'"}'
    status, got = chunked_post(daphne_process, "/api/runs/", token, big)
    assert (status, got["error"]) == (400, "body_too_large"), got
    assert Run.objects.count() == 0


def nested_plan(depth: int) -> bytes:
    """A plan whose argument is ``depth`` arrays deep (json.dumps itself gives up near 1,000)."""
    return b'{"steps": [{"tool": "echo", "args": {"x": ' + b"[" * depth + b"1" + b"]" * depth + b"}}]}"


# Issue 11 #5, #10: each was accepted, a 500, or a message in Python's terms before.
HOSTILE_CREATES = [
    # A plan nested ~920-950 deep was accepted (201) and could never execute.
    (nested_plan(33), "invalid_plan", "nested more than 32 levels"),
    # Past JSON_MAX_DEPTH the body is refused before it is parsed, wherever the parser runs
    # (json.loads' RecursionError came at a depth that depended on the caller's stack).
    (nested_plan(500), "invalid_plan", "nested more than 32 levels"),
    (nested_plan(950), "malformed_json", "nested more than 512 levels deep"),
    (nested_plan(5000), "malformed_json", "nested more than 512 levels deep"),
    (
        b'{"steps": [{"tool": "echo", "args": {"n": ' + b"9" * 5000 + b"}}]}",
        "malformed_json",
        "more than 4300 digits",
    ),
    (b'{"steps": [{"tool": "echo", "args": {"n": NaN}}]}', "malformed_json", "NaN is not a JSON number"),
    (b'{"steps": "\xff"}', "malformed_json", "not UTF-8"),
    ({"steps": [{"tool": "echo"}] * 51}, "invalid", "at most 50 steps"),
    ({"steps": [{"tool": "wait", "args": {"seconds": 1e9}}]}, "invalid_plan", "at most 60"),
    ({"steps": [{"tool": "wait", "args": {"seconds": -1}}]}, "invalid_plan", "at least 0"),
    (
        {"steps": [{"tool": "wait", "args": {"seconds": 1e999}}]},
        "malformed_json",
        "Infinity is not a JSON number",
    ),
]
PYTHON_WORDS = ("sys.", "Traceback", "hexadecimal", "Python", "int_max")


def test_hostile_creates_are_json_400_and_create_nothing(daphne_process, token):
    for body, error, message in HOSTILE_CREATES:
        status, _, got = call(daphne_process, "POST", "/api/runs/", token=token, body=body)
        assert (status, got["error"]) == (400, error), (body if len(str(body)) < 200 else error, got)
        assert message in got["message"], got
        assert not any(word in got["message"] for word in PYTHON_WORDS), got
    assert Run.objects.count() == 0
    assert "Traceback" not in daphne_process.log()


def test_traversal_and_odd_paths_are_json_404(daphne_process, token):
    for path in [
        "/api/runs/../../etc/passwd",
        "/api/runs/%2e%2e/%2e%2e/etc/passwd/",
        "/api/runs/..%2f..%2fsettings.py/",
        "/api/runs/not-a-uuid/events/",
        "/api/runs/00000000-0000-0000-0000-00000000000g/",
        "/api/runs/" + "a" * 5000 + "/",
    ]:
        connection = http.client.HTTPConnection("127.0.0.1", daphne_process.port, timeout=30)
        try:
            connection.request("GET", path, headers={"Authorization": f"Token {token}"})
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        assert (response.status, body["error"]) == (404, "not_found"), (path, body)


def test_a_chunked_json_body_is_read(daphne_process, token):
    # Issue 11 #10: it was ignored ("steps: This field is required").
    status, got = chunked_post(
        daphne_process, "/api/runs/", token, b'{"steps": [{"tool": "echo", "args": {"n": 1}}]}'
    )
    assert status == 201, got
    assert Run.objects.get().plan == [{"tool": "echo", "args": {"n": 1}}]


def body_of(size: int) -> bytes:
    """A valid create of exactly ``size`` bytes (echo's argument pads it)."""
    head, tail = b'{"steps": [{"tool": "echo", "args": {"pad": "', b'"}}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
def test_a_body_at_the_limit_is_read_and_one_byte_more_refused(daphne_process, token, chunked):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # API_MAX_BODY_BYTES

    def post(body: bytes):
        if chunked:
            return chunked_post(daphne_process, "/api/runs/", token, body)
        status, _, got = call(daphne_process, "POST", "/api/runs/", token=token, body=body)
        return status, got

    status, got = post(body_of(limit))
    assert status == 201, got
    status, got = post(body_of(limit + 1))
    assert (status, got["error"]) == (400, "body_too_large"), got
    assert Run.objects.count() == 1


def test_a_post_without_the_trailing_slash_is_a_308_that_keeps_the_post(daphne_process, token):
    # Issue 11 #10: it was a 301, which clients follow with a GET (the run silently not created).
    connection = http.client.HTTPConnection("127.0.0.1", daphne_process.port, timeout=30)
    try:
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        connection.request(
            "POST", "/api/runs", body=json.dumps({"steps": [{"tool": "echo"}]}), headers=headers
        )
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert (response.status, response.getheader("Location"), body["error"]) == (308, "/api/runs/", "moved")
    assert Run.objects.count() == 0
    # Followed as browsers and curl -L do: the same method and body, to the Location.
    location = response.getheader("Location")
    status, _, created = call(
        daphne_process, "POST", location, token=token, body={"steps": [{"tool": "echo"}]}
    )
    assert (status, created.get("status")) == (201, "queued"), created


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


def test_access_over_http(daphne_process, token, other_user, staff_user):
    from rest_framework.authtoken.models import Token

    status, _, run = call(
        daphne_process, "POST", "/api/runs/", token=token, body={"steps": [{"tool": "echo"}]}
    )
    assert status == 201
    other = Token.objects.create(user=other_user).key
    staff = Token.objects.create(user=staff_user).key
    for path in (f"/api/runs/{run['id']}/", f"/api/runs/{run['id']}/events/"):
        # Someone else's run is not found (its existence is not revealed); staff read every run.
        status, _, body = call(daphne_process, "GET", path, token=other)
        assert (status, body["error"]) == (404, "not_found"), path
        assert call(daphne_process, "GET", path, token=staff)[0] == 200, path
        assert call(daphne_process, "GET", path)[0] == 401, path
    status, _, body = call(daphne_process, "POST", f"/api/runs/{run['id']}/cancel/", token=other)
    assert status == 404
    assert call(daphne_process, "GET", "/api/runs/", token=other)[2]["count"] == 0
    assert call(daphne_process, "GET", "/api/runs/", token=staff)[2]["count"] == 1
    for secret in (token, other, staff):
        assert secret not in daphne_process.log()


def session_opener(server, username, password):
    """A cookie-keeping HTTP client logged in through the admin's login form (CSRF and all)."""
    import http.cookiejar
    import re

    class SecureCookiesOverPlainHttp(http.cookiejar.DefaultCookiePolicy):
        # Production settings mark the cookies Secure; this test server speaks plain HTTP on loopback.
        def return_ok_secure(self, cookie, request):
            return True

    jar = http.cookiejar.CookieJar(policy=SecureCookiesOverPlainHttp())
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(server.url + "/admin/login/", timeout=30).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/admin/"}
    ).encode()
    login = urllib.request.Request(
        server.url + "/admin/login/", data=form, headers={"Referer": server.url + "/"}
    )
    opener.open(login, timeout=30).read()
    cookies = {cookie.name: cookie.value for cookie in jar}
    return opener, cookies


def test_session_writes_need_the_csrf_token_and_the_admin_is_staff_only(
    daphne_process, user, staff_user, settings
):
    # Sessions come from the admin's login, which only staff pass. The server checks passwords
    # with the production hasher (this directory's tests use a fast one).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    for person, password in ((user, "pw-alice-123"), (staff_user, "pw-root-123")):
        person.set_password(password)
        person.save(update_fields=["password"])
    _, cookies = session_opener(daphne_process, "alice", "pw-alice-123")
    assert "sessionid" not in cookies
    opener, cookies = session_opener(daphne_process, "root", "pw-root-123")
    assert "sessionid" in cookies
    body = json.dumps({"steps": [{"tool": "echo"}]}).encode()

    def post(headers):
        request = urllib.request.Request(
            daphne_process.url + "/api/runs/",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, got = post({})
    assert (status, got["error"]) == (403, "permission_denied") and "CSRF" in got["message"], got
    assert Run.objects.count() == 0
    status, got = post({"X-CSRFToken": cookies["csrftoken"], "Referer": daphne_process.url + "/"})
    assert status == 201, got

    with opener.open(daphne_process.url + "/admin/runs/run/", timeout=30) as response:
        assert response.url.endswith("/admin/runs/run/") and response.status == 200
    log = daphne_process.log()
    assert all(secret not in log for secret in (cookies["sessionid"], cookies["csrftoken"], "pw-root-123"))
    # Without a staff session the admin shows its login page, nothing else.
    with urllib.request.urlopen(daphne_process.url + "/admin/runs/run/", timeout=30) as response:
        assert "/admin/login/" in response.url
        assert "Select run to change" not in response.read().decode()
