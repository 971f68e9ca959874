"""realtime.access.auth's Origin check: the socket's own origin, trusted origins, DEBUG's local defaults."""

import pytest

from realtime.access.auth import OriginCheckMiddleware


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://localhost", "localhost"),  # both on the scheme's default port
        ("http://localhost", "localhost:80"),
        ("https://localhost:443", "localhost"),
        ("http://[::1]:8000", "[::1]:8000"),  # an IPv6 literal, as Host writes it
    ],
)
def test_an_origin_on_the_sockets_own_host_and_port_is_allowed(origin, host):
    assert OriginCheckMiddleware.allowed(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://localhost", "localhost:443"),
        ("https://localhost", "localhost:80"),
        ("ftp://localhost", "localhost"),
        ("http://[::1]:8000", "[::2]:8000"),
    ],
)
def test_an_origin_on_another_port_or_scheme_is_refused(origin, host):
    assert not OriginCheckMiddleware.allowed(origin, host)


def test_a_trusted_origin_is_allowed_from_any_host(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    assert OriginCheckMiddleware.allowed("https://app.example.com", "internal:8000")
    assert not OriginCheckMiddleware.allowed("https://other.example.com", "internal:8000")


def test_with_debug_on_and_no_allowed_hosts_only_local_origins_are_allowed(settings):
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    assert OriginCheckMiddleware.allowed("http://localhost:8000", "localhost:8000")
    assert not OriginCheckMiddleware.allowed("http://evil.example", "evil.example")
    settings.DEBUG = False
    assert not OriginCheckMiddleware.allowed("http://localhost:8000", "localhost:8000")
