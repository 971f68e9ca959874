"""Small, strict readers for settings that come from the environment.

Each raises ImproperlyConfigured with the variable's name when a value is
malformed, so a bad deploy stops at start-up with a clear message instead of
failing later on a request.
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def env_origins(name: str) -> list[str]:
    """A comma-separated list of exact web origins (``scheme://host[:port]``), each checked.

    A browser sends its Origin as exactly this: the scheme, the host in lower
    case, the port only when it is not the scheme's default, and nothing after.
    An entry written any other way could never equal one, so it is refused
    here, with the form to write instead, rather than silently allowing nobody.
    """
    origins = env_list(name, [])
    for origin in origins:
        problem = _origin_problem(origin)
        if problem:
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin ({problem}); write each as "
                "scheme://host[:port], e.g. https://app.example.com or http://localhost:3000"
            )
    return origins


def _origin_problem(origin: str) -> str | None:
    if "*" in origin:
        return "no wildcards: list each origin"
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not origin.startswith(f"{parts.scheme}://"):
        return "the scheme must be http:// or https://"
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the port is not a port number"
    if not host or parts.username is not None or parts.password is not None:
        return "no host" if not host else "no user name or password"
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal
    port_part = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    canonical = f"{parts.scheme}://{host}{port_part}"
    if origin != canonical:
        return f"a browser would send {canonical!r}: no path (not even /), query, default port or capitals"
    return None
