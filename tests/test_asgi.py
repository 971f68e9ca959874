"""quikday/asgi.py: importing it starts no thread; serving starts this process's reporter, once."""

import os
import subprocess
import sys

from observability import reporter
from quikday import asgi

IMPORT_AND_LIST_THREADS = (
    "import threading, django; django.setup(); import quikday.asgi; "
    "print(sorted(t.name for t in threading.enumerate()))"
)


def test_importing_the_application_starts_no_reporter_thread():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_LIST_THREADS],
        # Embedded settings: the import reads no database and no Redis.
        env={
            **os.environ,
            "DATABASE_URL": "sqlite:///:memory:",
            "REDIS_URL": "",
            "DJANGO_SETTINGS_MODULE": "quikday.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    threads = result.stdout.strip().splitlines()[-1]
    assert "MainThread" in threads
    assert "observability-" not in threads


async def test_the_servers_first_call_starts_the_reporter_once(monkeypatch):
    started, served = [], []
    monkeypatch.setattr(reporter, "start", lambda role: started.append(role))

    async def routes(scope, receive, send):
        served.append(scope["type"])

    application = asgi.StartsReporter(routes)
    assert started == []
    await application({"type": "lifespan"}, None, None)
    await application({"type": "websocket"}, None, None)
    assert started == ["web"] and served == ["lifespan", "websocket"]
