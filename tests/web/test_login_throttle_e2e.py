"""Login throttling through a real Daphne started as the Procfile does (--proxy-headers).

Daphne hands the first X-Forwarded-For entry to Django as REMOTE_ADDR; a platform's
router appends the address it saw to whatever the client sent. A client that
writes a new first entry each time must still be counted as one address.
"""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from django.conf import settings

from tests.processes import BIN, READY_TIMEOUT, Server, _running, free_port, subprocess_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

PASSWORD = "pw-proxy-login-1"
CLIENT = "198.51.100.7"  # what the platform's router saw


def request(port: int, method: str, path: str, **kwargs) -> tuple[http.client.HTTPResponse, str]:
    """One request on a connection of its own (a closed keep-alive is no test failure)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, **kwargs)
        response = connection.getresponse()
        return response, response.read().decode()
    finally:
        connection.close()


def log_in(port: int, password: str, forwarded_for: str) -> int:
    """The login form as a browser behind the router submits it: the page, then the POST; its status."""
    headers = {"X-Forwarded-For": forwarded_for}
    page, body = request(port, "GET", "/login/", headers=headers)
    cookies = "; ".join(
        value.split(";")[0] for name, value in page.getheaders() if name.lower() == "set-cookie"
    )
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    form = urlencode({"username": "carol", "password": password, "csrfmiddlewaretoken": token, "next": "/"})
    headers |= {"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"}
    answer, _body = request(port, "POST", "/login/", body=form, headers=headers)
    return answer.status


def test_behind_the_proxy_forged_first_entries_do_not_dodge_the_lockout(django_user_model):
    django_user_model.objects.create_user(username="carol", password=PASSWORD)
    port = free_port()
    args = [
        str(BIN / "daphne"),
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "--proxy-headers",
        "quikday.asgi:application",
    ]
    server = Server(args, subprocess_env(), port)
    with _running(server):
        server.wait_until(server.accepts, READY_TIMEOUT, "accepting connections")
        for forged in range(settings.AXES_FAILURE_LIMIT):
            assert log_in(port, "wrong", f"10.9.9.{forged}, {CLIENT}") in (200, 429)
        assert log_in(port, PASSWORD, f"10.9.9.99, {CLIENT}") == 429
        assert log_in(port, PASSWORD, "10.9.9.100, 198.51.100.8") == 302  # another client
        log = server.log()
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == [CLIENT]
    assert "Traceback" not in log
