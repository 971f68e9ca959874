"""The modes under test: each is only an environment for the same code.

A mode is available when the code routes /ws/runs/ to a consumer that serves
it (probed in a subprocess with the mode's environment); otherwise the bench
prints a "not available" row for it and goes on.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.stack import PYTHON, ROOT

POLL_INTERVAL = "2.0"  # the old system's period, kept for both polling modes


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    env: dict[str, str] = field(default_factory=dict)
    push: bool = False  # delivers through the channel layer
    # The ASGI application Daphne serves, and the module whose routes it serves /ws/runs/<id>/ with.
    asgi_app: str = "quikday.asgi:application"
    routing: str = "realtime.routing"


MODES = [
    Mode(
        "legacy",
        "(a) old design: each connection polls every 2 s",
        {
            "REALTIME_MODE": "poll",
            "REALTIME_POLL_INTERVAL": POLL_INTERVAL,
        },
        asgi_app="bench.legacy:application",
        routing="bench.legacy",
    ),
    Mode(
        "poll",
        "(b) multiplexed polling, 2 s",
        {"REALTIME_MODE": "poll", "REALTIME_POLL_INTERVAL": POLL_INTERVAL},
    ),
    Mode(
        "push-redis",
        "(c) push, RedisChannelLayer",
        {"REALTIME_MODE": "push", "REALTIME_CHANNEL_LAYER": "redis"},
        push=True,
    ),
    Mode(
        "push-pubsub",
        "(d) push, RedisPubSubChannelLayer",
        {"REALTIME_MODE": "push", "REALTIME_CHANNEL_LAYER": "pubsub"},
        push=True,
    ),
    Mode(
        "hybrid",
        "(e) hybrid: push (pub/sub) + 10 s safety poll",
        {"REALTIME_MODE": "hybrid", "REALTIME_CHANNEL_LAYER": "pubsub"},
        push=True,
    ),
]
BY_KEY = {mode.key: mode for mode in MODES}

_PROBE = """
import importlib, json, sys, django
django.setup()
routes = importlib.import_module(sys.argv[1]).websocket_urlpatterns
app = next(route.callback for route in routes if "run_id" in route.pattern.regex.groupindex)
consumer = app.consumer_class()
consumer.init_state()  # the connection's stream, with the mode's delivery policy
cls = app.consumer_class
print(json.dumps({"cls": f"{cls.__module__}.{cls.__qualname__}", "mode": consumer.stream.mode}))
"""


def probe(env: dict[str, str], routing: str = "realtime.routing") -> dict:
    """The consumer ``routing`` routes to under ``env`` (or {"error": ...})."""
    done = subprocess.run(
        [PYTHON, "-c", _PROBE, routing],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def availability(base_env: dict[str, str]) -> dict[str, str | None]:
    """For each mode: None when available, else why not."""
    with ThreadPoolExecutor(len(MODES)) as pool:
        probes = pool.map(lambda mode: probe({**base_env, **mode.env}, mode.routing), MODES)
    found = {mode.key: got for mode, got in zip(MODES, probes, strict=True)}
    reasons: dict[str, str | None] = {}
    for mode in MODES:
        got = found[mode.key]
        if "error" in got:
            reasons[mode.key] = f"start-up fails: {got['error']}"
        elif mode.key == "legacy":
            same = got["cls"] == found["poll"].get("cls")
            ok = got["mode"] == "poll" and not same
            reasons[mode.key] = None if ok else "no per-connection polling consumer (bench.legacy)"
        else:
            want = mode.env["REALTIME_MODE"]
            ok = got["mode"] == want
            reasons[mode.key] = (
                None if ok else f"REALTIME_MODE={want} routes to {got['cls']} (mode {got['mode']})"
            )
    return reasons
