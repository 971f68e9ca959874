"""quikday/env.py: the readers of settings from the environment, each at its edges.

A bad value stops start-up with the variable's name (ImproperlyConfigured); an
unset or empty one gives the default; a value at a minimum is taken.
"""

import pytest
from django.core.exceptions import ImproperlyConfigured

from quikday.env import env_bool, env_choice, env_float, env_int, env_list, env_origins

NAME = "QUIKDAY_TEST_SETTING"


@pytest.fixture
def setting(monkeypatch):
    def set_to(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(NAME, raising=False)
        else:
            monkeypatch.setenv(NAME, value)

    return set_to


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("false", False), ("", False)],
)
def test_env_bool_reads_the_usual_spellings(setting, raw, expected):
    setting(raw)
    assert env_bool(NAME, default=not expected) is expected


def test_env_bool_unset_is_the_default_and_the_default_is_false(setting):
    setting(None)
    assert env_bool(NAME) is False
    assert env_bool(NAME, True) is True


def test_env_bool_refuses_anything_else_by_name(setting):
    setting("maybe")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be a boolean .*'maybe'"):
        env_bool(NAME)


@pytest.mark.parametrize("reader", [env_float, env_int])
def test_unset_or_empty_is_the_default(setting, reader):
    for raw in (None, ""):
        setting(raw)
        assert reader(NAME, 7) == 7


def test_env_float_takes_its_minimum_and_refuses_below_it(setting):
    setting("0.05")
    assert env_float(NAME, 1.0, minimum=0.05) == 0.05
    setting("0.049")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be at least 0.05, got '0.049'"):
        env_float(NAME, 1.0, minimum=0.05)


def test_env_float_and_env_int_take_zero_and_refuse_a_negative_by_default(setting):
    setting("0")
    assert env_float(NAME, 1.0) == 0.0
    assert env_int(NAME, 1) == 0
    setting("-0.5")
    with pytest.raises(ImproperlyConfigured, match=r"must be at least 0\.0,"):
        env_float(NAME, 1.0)
    setting("-1")
    with pytest.raises(ImproperlyConfigured, match="must be at least 0,"):
        env_int(NAME, 1)


def test_env_int_takes_its_minimum_and_refuses_below_it(setting):
    setting("60")
    assert env_int(NAME, 900, minimum=60) == 60
    setting("59")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be at least 60, got '59'"):
        env_int(NAME, 900, minimum=60)


@pytest.mark.parametrize(
    ("reader", "raw", "words"),
    [(env_float, "fast", "a number"), (env_int, "2.5", "a whole number"), (env_int, "ten", "a whole number")],
)
def test_a_value_that_is_no_number_is_refused_by_name(setting, reader, raw, words):
    setting(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be {words}, got '{raw}'"):
        reader(NAME, 1)


def test_env_list_splits_on_commas_and_drops_blanks(setting):
    setting(None)
    assert env_list(NAME, ["a"]) == ["a"]
    setting(" a, ,b ,")
    assert env_list(NAME, ["x"]) == ["a", "b"]


def test_env_choice_is_case_blind_empty_is_the_default_and_others_are_refused(setting):
    setting(" POLL ")
    assert env_choice(NAME, "push", ("push", "poll")) == "poll"
    setting("")
    assert env_choice(NAME, "push", ("push", "poll")) == "push"
    setting(None)
    assert env_choice(NAME, "push", ("push", "poll")) == "push"
    setting("sse")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be one of push, poll; got 'sse'"):
        env_choice(NAME, "push", ("push", "poll"))


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:3000", "https://app.example.com", "http://example.com:81", "https://[::1]:8443"],
)
def test_an_origin_as_a_browser_sends_it_is_taken(setting, origin):
    setting(origin)
    assert env_origins(NAME) == [origin]


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("http://example.com:80", "a browser would send 'http://example.com'"),
        ("https://example.com:443", "a browser would send 'https://example.com'"),
        ("http://user@example.com", "no user name or password"),
        ("http://:pw@example.com", "no user name or password"),
        ("https://", "no host"),
        ("https://example.com/", "no path"),
        ("ftp://example.com", "the scheme must be http:// or https://"),
        ("https://*.example.com", "no wildcards"),
        ("http://example.com:port", "the port is not a port number"),
    ],
)
def test_an_origin_a_browser_never_sends_is_refused_with_the_form_to_write(setting, origin, problem):
    setting(origin)
    with pytest.raises(ImproperlyConfigured, match=r"is not an origin \(") as refused:
        env_origins(NAME)
    assert problem in str(refused.value)
