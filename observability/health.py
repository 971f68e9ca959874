"""GET /healthz and the start-up line that says which mode the process runs in.

/healthz answers 200 when the database and every configured Redis server
answer — the Celery broker and each server of the sharded channel layer
(REALTIME_REDIS_URLS) — else 503 naming what failed. A shard that is down
leaves the watchers of its runs on polling and publishes to it failing
until it is back, so it is as much "not healthy" as the broker. The Redis
servers are asked side by side, each with a short timeout, so one that hangs
costs the probe one timeout, not one per server. JSON either way, no
authentication, exempt from the HTTPS redirect so a platform's plain-HTTP probe
gets an answer. Servers are named by role and position, never by URL (the
answer is public and URLs carry passwords).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_all
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

OK = "ok"
NOT_CONFIGURED = "not configured"
NOT_CHECKED = "not checked"  # a broker that is not Redis (Celery's other transports)
UNAVAILABLE = "unavailable"
REDIS_TIMEOUT_SECONDS = 1.0
REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy"
        logger.warning("healthz: the database does not answer: %s", error)
        return UNAVAILABLE
    return OK


def ping_redis(url: str, *, timeout: float) -> str:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One try: redis-py retries a timed-out command three times by default.
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001
        logger.warning("healthz: Redis server %s does not answer: %s", _where(url), error)
        return UNAVAILABLE
    finally:
        client.close()
    return OK


def _where(url: str) -> str:
    """``url`` without its credentials, for the log."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"


def redis_servers() -> dict[str, str]:
    """Every Redis server this deployment needs, by name: ``broker`` and ``channel_layer[i]``
    (i: its position in REALTIME_REDIS_URLS, as realtime/events/shards.py and the layer probe count)."""
    servers = {"broker": settings.CELERY_BROKER_URL} if settings.CELERY_BROKER_URL else {}
    if settings.REDIS_URL:  # else the channel layer is in memory (settings)
        servers.update({f"channel_layer[{i}]": url for i, url in enumerate(settings.REALTIME_REDIS_URLS)})
    return servers


def check_redis_servers(servers: dict[str, str], *, timeout: float = REDIS_TIMEOUT_SECONDS) -> dict[str, str]:
    """Each server's state, asked in parallel; one URL named twice is asked once."""
    pinged = sorted({url for url in servers.values() if urlparse(url).scheme in REDIS_SCHEMES})
    if not pinged:
        return dict.fromkeys(servers, NOT_CHECKED)
    executor = ThreadPoolExecutor(max_workers=len(pinged), thread_name_prefix="healthz")
    try:
        futures = {url: executor.submit(ping_redis, url, timeout=timeout) for url in pinged}
        # The connect and the reply may each take the timeout; past both, the server is down.
        wait_for_all(futures.values(), timeout=2 * timeout)
    finally:
        executor.shutdown(wait=False)  # a straggler ends at its socket timeout
    states = {url: future.result() if future.done() else UNAVAILABLE for url, future in futures.items()}
    return {name: states.get(url, NOT_CHECKED) for name, url in servers.items()}


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok", "database": "ok", "redis": "ok", "broker": "ok", "channel_layer": ["ok", …]},
    or 503 with "failed": the names of what did not answer. Without Redis (embedded
    mode): "redis": "not configured" and no per-server keys."""
    servers = redis_servers()
    with ThreadPoolExecutor(max_workers=1) as background:
        asked = background.submit(check_redis_servers, servers)
        checks = {"database": check_database(), **asked.result()}
    failed = [name for name, state in checks.items() if state == UNAVAILABLE]
    body = {
        "status": "error" if failed else OK,
        "database": checks["database"],
        "redis": _summary(servers, failed),
    }
    if "broker" in checks:
        body["broker"] = checks["broker"]
    if shards := [state for name, state in checks.items() if name.startswith("channel_layer[")]:
        body["channel_layer"] = shards
    if failed:
        body["failed"] = failed
    body["mode"] = mode_name()
    return JsonResponse(body, status=503 if failed else 200)


def _summary(servers: dict[str, str], failed: list[str]) -> str:
    """ "redis": one word for all of them, as before the layer was sharded."""
    if not servers:
        return NOT_CONFIGURED
    return UNAVAILABLE if any(name in servers for name in failed) else OK


def mode_name() -> str:
    return "embedded" if settings.EMBEDDED else "full stack"


def mode_summary() -> dict[str, str]:
    """What this process runs on: mode, database, channel layer, executor, realtime mode."""
    database = settings.DATABASES["default"]
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    executor = settings.RUNS_EXECUTOR
    return {
        "mode": mode_name(),
        "database": f"{database['ENGINE'].rsplit('.', 1)[-1]} {database.get('NAME') or ''}".strip(),
        "channel_layer": layer,
        "executor": "inline (threads of this process)" if executor == "inline" else "celery workers",
        "realtime": settings.REALTIME_MODE,
        "debug": "on" if settings.DEBUG else "off",
    }


def log_mode() -> None:
    """One line at server start-up, so an operator sees which shape is running."""
    summary = mode_summary()
    logger.info(
        "Quik.day Realtime, %s mode: database=%s, channel layer=%s, executor=%s, realtime=%s, debug=%s",
        summary["mode"],
        summary["database"],
        summary["channel_layer"],
        summary["executor"],
        summary["realtime"],
        summary["debug"],
        extra={"event": "startup", **summary},  # the 🔌 line (see observability.logs)
    )
