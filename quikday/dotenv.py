"""The checkout's local settings file, ``.env``: written once by ``make run``, read by the settings.

``make run`` serves with DEBUG on and a secret key of its own. Kept in ``.env``
at the top of the checkout, they hold for every other ``manage.py`` command run
there too (createsuperuser, changepassword, drf_create_token), which would
otherwise refuse to start for want of SECRET_KEY. A variable of the real
environment always wins over the file, and a deployment has no such file (it
is git-ignored): a platform's settings come from its environment alone.

``QUIKDAY_ENV_FILE`` names another file; set to the empty string, no file is read.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DEFAULT_PATH = Path(__file__).resolve().parent.parent / ".env"
PATH_VARIABLE = "QUIKDAY_ENV_FILE"


def env_file() -> Path | None:
    """The file to read: QUIKDAY_ENV_FILE when set (None if empty), else the checkout's .env."""
    named = os.environ.get(PATH_VARIABLE)
    if named is None:
        return DEFAULT_PATH
    return Path(named) if named else None


def parse(text: str, source: str) -> dict[str, str]:
    """``NAME=value`` lines; blank lines, ``#`` comments and an ``export`` prefix allowed."""
    values = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.isidentifier():
            raise ImproperlyConfigured(f"{source}:{number}: expected NAME=value, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load(path: Path | None = None) -> dict[str, str]:
    """Put the file's variables into os.environ where they are not set already; return those put."""
    path = env_file() if path is None else path
    if path is None or not path.is_file():
        return {}
    added = {
        name: value
        for name, value in parse(path.read_text(encoding="utf-8"), str(path)).items()
        if name not in os.environ
    }
    os.environ.update(added)
    return added


def create(path: Path) -> bool:
    """Write a development .env (DEBUG on, a generated SECRET_KEY) unless one exists; True if written."""
    content = (
        "# Local settings of this checkout, written by `make run` and read by every manage.py\n"
        "# command here; variables set in the environment win. Never deploy this file.\n"
        "DEBUG=1\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
    )
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(content)
    return True


def main() -> None:
    path = env_file()
    if path is None:
        return
    if create(path):
        print(f"Wrote {path}: DEBUG=1 and a generated SECRET_KEY, for every manage.py command here.")


if __name__ == "__main__":
    main()
