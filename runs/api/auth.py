"""Token authentication that refuses a malformed key before it reaches the database."""

import string

from rest_framework import authentication, exceptions

_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token <key>``; a key with odd characters (a NUL above all,
    which PostgreSQL refuses in a query) is an invalid token, not a database error."""

    def authenticate_credentials(self, key):
        if not key or len(key) > 128 or not set(key) <= _KEY_CHARACTERS:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
