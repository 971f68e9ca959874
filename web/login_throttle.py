"""Login throttling's two project-specific parts (django-axes does the rest; see settings).

The backend skips a login without a request: only code (a test's
``Client.login``, a shell) authenticates without one, and there is no client
address to count it against. Every web login passes its request, so the site's
and the admin's login are throttled.

The client's address: Daphne under the Procfile's ``--proxy-headers`` puts
the *first* X-Forwarded-For entry in REMOTE_ADDR, and a platform's router
appends to whatever header the client sent, so that entry is the client's to
choose — a new one per attempt would dodge every lockout. The entry that counts
is the one the outermost of LOGIN_PROXY_COUNT proxies appended: the
LOGIN_PROXY_COUNT-th from the end. With no proxy (LOGIN_PROXY_COUNT=0, `make run`)
or a shorter header, it is REMOTE_ADDR, the socket's peer.
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest


class LoginThrottleBackend(AxesStandaloneBackend):
    def authenticate(self, request: HttpRequest | None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    proxies = settings.LOGIN_PROXY_COUNT
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")
