"""Login throttling's two project-specific parts (django-axes does the rest; see settings).

The backend skips a login without a request: only code (a test's
``Client.login``, a shell) authenticates without one, and there is no client
address to count it against. Every web login passes its request, so the site's
and the admin's login are throttled.

The client's address is ``REMOTE_ADDR`` as Daphne sets it: the socket's peer,
or behind the platform's proxy (the Procfile's ``--proxy-headers``) the address
the proxy put in X-Forwarded-For. The header itself is never read here, so a
client that talks to Daphne directly cannot pick an address to dodge the count.
"""

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LoginThrottleBackend(AxesStandaloneBackend):
    def authenticate(self, request: HttpRequest | None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR")
