"""Secrets out of text: what every log line (and every Sentry event) passes through.

Patterns, not a list of known values only: a token or password can reach a
line from anywhere — a library's exception message, a URL with a query
string, a header dump. The settings' own secrets (SECRET_KEY, METRICS_TOKEN)
are also removed verbatim wherever they appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

_SECRET_NAMES = (
    r"(?:password|passwd|pwd|secret|secret_key|token|access_token|refresh_token|api_key|apikey"
    r"|ticket|sessionid|csrftoken|csrfmiddlewaretoken|dsn)"
)

_NAMES = _SECRET_NAMES[3:-1].split("|")

# Each pattern with the lowercase substrings one of which a match must contain: most
# lines contain none, and a substring test is a hundred times cheaper than the regex.
_PATTERNS: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    # Authorization headers in any dump: "Authorization: Token abc", ('authorization', b'Bearer abc')
    (
        ("authorization",),
        re.compile(r"""(?i)(authorization['"]?\s*[:=,]\s*b?['"]?)[^'"\\\r\n,)}]+"""),
        r"\1" + REDACTED,
    ),
    # An HTTP auth scheme followed by its credential.
    (
        ("token", "bearer", "basic"),
        re.compile(r"(?i)\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
        r"\1 " + REDACTED,
    ),
    # name=value in query strings, form bodies and "k=v" log fields.
    (
        tuple(f"{name}=" for name in _NAMES),
        re.compile(rf"(?i)({_SECRET_NAMES})=[^&\s'\"\\,;)]+"),
        r"\1=" + REDACTED,
    ),
    # "name": "value" / 'name': 'value' / name: value in JSON and reprs.
    (
        tuple(_NAMES),
        re.compile(rf"""(?i)(['"]?{_SECRET_NAMES}['"]?\s*:\s*)(?:"[^"]*"|'[^']*'|[^\s,}}\\]+)"""),
        r"\1" + REDACTED,
    ),
    # Credentials inside a URL: scheme://user:password@host
    (("://",), re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
]

# One scan for any trigger at all: the common case (a line with none) costs one regex search.
_ANY_TRIGGER = re.compile(
    "|".join(re.escape(t) for triggers, _, _ in _PATTERNS for t in sorted(set(triggers)))
)

_known: tuple[str, ...] = ()


def remember_secrets(values: Iterable[str]) -> None:
    """Also redact these literal values (the deployment's own secrets) wherever they appear."""
    global _known
    _known = tuple(sorted({v for v in values if v and len(v) >= 8}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every credential-looking part replaced by [redacted]."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if not _ANY_TRIGGER.search(lowered):
        return text
    for triggers, pattern, replacement in _PATTERNS:
        if any(trigger in lowered for trigger in triggers):
            text = pattern.sub(replacement, text)
    return text
