"""Login throttling (django-axes, settings' "Login throttling"): the site's login and the admin's.

A user name and client address pair is refused after LOGIN_FAILURE_LIMIT
wrong passwords in a row, right password included, until the cool-off has
passed or staff unlock it; other users and other addresses are unaffected.
The cool-off is passed by moving the recorded failures back in time, not by waiting.
"""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

RIGHT = "pw-alice-123"  # tests/conftest.py's alice
HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"
LOGINS = {"site": "/login/", "admin": "/admin/login/"}


def log_in(path: str, username: str, password: str, *, ip: str = HOME, **headers) -> tuple[int, bool, str]:
    """POST a login form as a fresh browser; (status, logged in afterwards, page text)."""
    client = Client(REMOTE_ADDR=ip)
    response = client.post(path, {"username": username, "password": password, "next": "/"}, **headers)
    return response.status_code, "_auth_user_id" in client.session, response.content.decode()


def fail(path: str, username: str = "alice", *, times: int = settings.AXES_FAILURE_LIMIT, ip: str = HOME):
    for _ in range(times):
        _status, logged_in, _page = log_in(path, username, "wrong password", ip=ip)
        assert not logged_in


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Dozens of logins here: the default hasher's deliberate slowness is not what is tested.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(user):
    user.is_staff = True  # so the admin's login would let her in too
    user.save(update_fields=["is_staff"])
    return user


def test_the_limit_is_a_few_failures_and_the_cool_off_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5 and settings.AXES_COOLOFF_TIME == timedelta(minutes=15)


@pytest.mark.parametrize("where", LOGINS)
def test_failures_below_the_limit_then_the_right_password_logs_in(alice, where):
    fail(LOGINS[where], times=settings.AXES_FAILURE_LIMIT - 1)
    status, logged_in, _page = log_in(LOGINS[where], "alice", RIGHT)
    assert status == 302 and logged_in
    # A success clears the count: as many failures again are still below the limit.
    fail(LOGINS[where], times=settings.AXES_FAILURE_LIMIT - 1)
    assert log_in(LOGINS[where], "alice", RIGHT)[1]


@pytest.mark.parametrize("where", LOGINS)
def test_after_the_limit_even_the_right_password_is_refused_with_a_clear_page(alice, where):
    fail(LOGINS[where])
    status, logged_in, page = log_in(LOGINS[where], "alice", RIGHT)
    assert status == 429 and not logged_in
    assert "Too many failed logins" in page and "as <strong>alice</strong>" in page
    assert "for 15 minutes" in page and "axes_reset_username" in page


def test_after_the_cool_off_the_right_password_is_accepted(alice):
    fail(LOGINS["site"])
    assert log_in(LOGINS["site"], "alice", RIGHT)[:2] == (429, False)
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME
    )
    assert log_in(LOGINS["site"], "alice", RIGHT)[:2] == (302, True)


def test_other_users_and_other_addresses_are_unaffected(alice, other_user):
    fail(LOGINS["site"])
    assert log_in(LOGINS["site"], "alice", RIGHT)[1] is False
    assert log_in(LOGINS["site"], "alice", RIGHT, ip=ELSEWHERE)[1] is True
    assert log_in(LOGINS["site"], other_user.username, "pw-bob-123")[1] is True


def test_without_a_proxy_a_forwarded_for_header_is_ignored(alice, settings):
    settings.LOGIN_PROXY_COUNT = 0  # `make run`: clients talk to Daphne directly
    fail(LOGINS["site"])
    status, logged_in, _page = log_in(LOGINS["site"], "alice", RIGHT, HTTP_X_FORWARDED_FOR=ELSEWHERE)
    assert (status, logged_in) == (429, False)


def test_behind_a_proxy_the_address_it_appended_counts_not_what_the_client_wrote(alice, settings):
    settings.LOGIN_PROXY_COUNT = 1
    # Daphne (--proxy-headers) hands the first entry over as REMOTE_ADDR: the client's own words.
    for forged in range(settings.AXES_FAILURE_LIMIT):
        client = Client(REMOTE_ADDR=f"192.0.2.{forged}", HTTP_X_FORWARDED_FOR=f"192.0.2.{forged}, {HOME}")
        client.post(LOGINS["site"], {"username": "alice", "password": "wrong password"})
    client = Client(REMOTE_ADDR="192.0.2.99", HTTP_X_FORWARDED_FOR=f"192.0.2.99, {HOME}")
    refused = client.post(LOGINS["site"], {"username": "alice", "password": RIGHT})
    assert refused.status_code == 429
    assert AccessAttempt.objects.get().ip_address == HOME
    elsewhere = Client(REMOTE_ADDR=HOME, HTTP_X_FORWARDED_FOR=f"{HOME}, {ELSEWHERE}")
    assert elsewhere.post(LOGINS["site"], {"username": "alice", "password": RIGHT}).status_code == 302


def test_behind_a_proxy_a_header_of_one_entry_is_the_address_it_appended(alice, settings):
    """A client that sent no header of its own: the proxy's one entry counts, whatever REMOTE_ADDR says."""
    settings.LOGIN_PROXY_COUNT = 1
    client = Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=HOME)
    client.post(LOGINS["site"], {"username": "alice", "password": "wrong password"})
    assert AccessAttempt.objects.get().ip_address == HOME


def test_staff_unlock_with_the_management_command(alice):
    fail(LOGINS["admin"])
    assert log_in(LOGINS["admin"], "alice", RIGHT)[:2] == (429, False)
    call_command("axes_reset_username", "alice")
    assert log_in(LOGINS["admin"], "alice", RIGHT)[:2] == (302, True)


def test_staff_unlock_in_the_admin(alice, staff_user):
    fail(LOGINS["site"])
    assert log_in(LOGINS["site"], "alice", RIGHT)[:2] == (429, False)
    admin = Client()
    admin.force_login(staff_user)
    changelist = admin.get("/admin/axes/accessattempt/")
    assert changelist.status_code == 200 and "alice" in changelist.content.decode()
    attempt = AccessAttempt.objects.get(username="alice")
    deleted = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert log_in(LOGINS["site"], "alice", RIGHT)[1] is True


def test_a_script_s_login_gets_json(alice):
    fail(LOGINS["site"])
    status, _logged_in, page = log_in(LOGINS["site"], "alice", RIGHT, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert status == 429 and '"failure_limit": 5' in page and '"username": "alice"' in page


def test_the_api_s_token_and_session_are_untouched_by_a_lockout(alice):
    key = Token.objects.create(user=alice).key
    fail(LOGINS["site"])
    assert log_in(LOGINS["site"], "alice", RIGHT)[:2] == (429, False)
    api = APIClient(REMOTE_ADDR=HOME)
    assert api.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert api.get("/api/runs/", HTTP_AUTHORIZATION="Token wrongwrongwrong").status_code == 401
    session = Client(REMOTE_ADDR=HOME)
    session.force_login(alice)  # a session from before the lockout keeps working
    assert session.get("/api/runs/").status_code == 200 and session.get("/").status_code == 200
