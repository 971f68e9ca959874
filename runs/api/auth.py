"""Token authentication that refuses a malformed key before it reaches the database."""

import string

from rest_framework import authentication, exceptions

_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits)


def is_well_formed_key(key: str) -> bool:
    """A token key as DRF issues them: 1 to 128 ASCII letters and digits."""
    return bool(key) and len(key) <= 128 and set(key) <= _KEY_CHARACTERS


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token <key>``; a key with odd characters (a NUL above all,
    which PostgreSQL refuses in a query) is an invalid token, not a database error."""

    def authenticate_credentials(self, key):
        if not is_well_formed_key(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
