"""CORS for the API (CORS_ALLOWED_ORIGINS): which answers carry which headers, and the setting's checks.

A browser decides from these headers alone whether a page on another origin
may read an answer, so the headers are the behaviour: an allowed origin gets
Access-Control-Allow-Origin on /api/ (preflight and actual answer), never
Access-Control-Allow-Credentials; any other origin and any other path get
none. tests/web/test_cross_origin_browser.py shows the same in Chromium.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from quikday.env import env_origins
from tests.test_deploy import manage, production_env

APP = "http://localhost:3000"  # the page's origin, allowed below
SAME_HOST_OTHER_PORT = "http://localhost:3001"  # another origin, though the same host (and site)
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP, "https://app.example.com"]
    return settings


def preflight(path: str, origin: str, method: str = "POST"):
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_a_preflight_from_an_allowed_origin_allows_the_token_header_without_credentials(cors):
    response = preflight("/api/ws-tickets/", APP)
    assert response.status_code == 200
    assert response[ALLOW_ORIGIN] == APP
    allowed_headers = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert "x-csrftoken" not in allowed_headers  # the CSRF token is a cookie's companion: not here
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert response["Access-Control-Max-Age"] == "7200"
    assert ALLOW_CREDENTIALS not in response


def test_an_allowed_origin_reads_the_apis_answers_with_a_token(cors, db, token):
    client = Client(headers={"Origin": APP, "Authorization": f"Token {token}"})
    response = client.post("/api/ws-tickets/")
    assert response.status_code == 201 and len(response.json()["ticket"]) > 20
    assert response[ALLOW_ORIGIN] == APP
    assert ALLOW_CREDENTIALS not in response
    assert "origin" in response["Vary"].lower()  # a shared cache keeps one copy per origin
    assert response["Access-Control-Expose-Headers"] == "retry-after"

    summaries = client.get("/api/run-summaries/")
    assert summaries.status_code == 200 and summaries[ALLOW_ORIGIN] == APP


def test_an_allowed_origin_reads_a_refusal_too(cors, db):
    # A bad token's 401 carries the header: the page's client can tell "not authenticated"
    # (and stop) from "unreachable" (and retry).
    response = Client(headers={"Origin": APP, "Authorization": "Token " + "0" * 40}).post("/api/ws-tickets/")
    assert response.status_code == 401
    assert response[ALLOW_ORIGIN] == APP


def test_an_answer_of_the_middleware_carries_the_headers_too(cors, db, token):
    # CommonMiddleware's 308 for a write without its slash replaces the view's answer: only
    # a CorsMiddleware outside it adds the headers the page needs to follow it.
    response = Client(headers={"Origin": APP, "Authorization": f"Token {token}"}).post("/api/ws-tickets")
    assert response.status_code == 308 and response["Location"] == "/api/ws-tickets/"
    assert response[ALLOW_ORIGIN] == APP


@pytest.mark.parametrize("origin", [SAME_HOST_OTHER_PORT, "https://localhost:3000", "https://evil.example"])
def test_another_origin_gets_no_cors_headers(cors, db, token, origin):
    assert ALLOW_ORIGIN not in preflight("/api/ws-tickets/", origin)
    response = Client(headers={"Origin": origin, "Authorization": f"Token {token}"}).post("/api/ws-tickets/")
    assert response.status_code == 201  # the server answers; the browser keeps it from the page
    assert ALLOW_ORIGIN not in response and ALLOW_CREDENTIALS not in response


def test_with_the_setting_empty_no_origin_gets_cors_headers(settings, db, token):
    settings.CORS_ALLOWED_ORIGINS = []
    assert ALLOW_ORIGIN not in preflight("/api/ws-tickets/", APP)
    response = Client(headers={"Origin": APP, "Authorization": f"Token {token}"}).get("/api/run-summaries/")
    assert response.status_code == 200 and ALLOW_ORIGIN not in response


@pytest.mark.parametrize("path", ["/login/", "/healthz", "/admin/login/", "/runs/"])
def test_paths_outside_the_api_get_no_cors_headers_even_for_an_allowed_origin(cors, db, path):
    assert ALLOW_ORIGIN not in preflight(path, APP, method="GET")
    assert ALLOW_ORIGIN not in Client(headers={"Origin": APP}).get(path)


def test_credentials_are_never_allowed_and_only_the_api_is_opened():
    from django.conf import settings

    assert settings.CORS_ALLOW_CREDENTIALS is False
    assert settings.CORS_URLS_REGEX == r"^/api/"
    assert settings.MIDDLEWARE[0] == "corsheaders.middleware.CorsMiddleware"


# --- The setting's checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, []),
        ("", []),
        (
            " https://app.example.com , http://localhost:3000 ",
            ["https://app.example.com", "http://localhost:3000"],
        ),
        ("http://127.0.0.1:8001,http://[::1]:8001", ["http://127.0.0.1:8001", "http://[::1]:8001"]),
    ],
)
def test_origins_are_read_as_a_comma_separated_list(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
    else:
        monkeypatch.setenv("CORS_ALLOWED_ORIGINS", raw)
    assert env_origins("CORS_ALLOWED_ORIGINS") == expected


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("https://app.example.com/", "a browser would send 'https://app.example.com'"),
        ("https://app.example.com/spa", "a browser would send 'https://app.example.com'"),
        ("https://App.Example.com", "a browser would send 'https://app.example.com'"),
        ("https://app.example.com:443", "a browser would send 'https://app.example.com'"),
        ("app.example.com", "the scheme must be http:// or https://"),
        ("ftp://app.example.com", "the scheme must be http:// or https://"),
        ("null", "the scheme must be http:// or https://"),
        ("https://*.example.com", "no wildcards"),
        ("*", "no wildcards"),
        ("http://localhost:port", "the port is not a port number"),
        ("http://:3000", "no host"),
        ("https://user:pw@app.example.com", "no user name or password"),
    ],
)
def test_a_malformed_origin_is_refused_naming_the_setting_and_the_form(monkeypatch, raw, problem):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", f"http://localhost:3000,{raw}")
    with pytest.raises(ImproperlyConfigured) as refused:
        env_origins("CORS_ALLOWED_ORIGINS")
    message = str(refused.value)
    assert message.startswith(f"CORS_ALLOWED_ORIGINS: {raw!r} is not an origin")
    assert problem in message and "scheme://host[:port]" in message


def test_a_malformed_origin_stops_start_up(tmp_path):
    env = production_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", CORS_ALLOWED_ORIGINS="https://app.example.com/"
    )
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "CORS_ALLOWED_ORIGINS: 'https://app.example.com/' is not an origin" in result.stderr
    env["CORS_ALLOWED_ORIGINS"] = "https://app.example.com"
    assert manage("check", env=env).returncode == 0
