"""GET /healthz and the start-up line that says which mode the process runs in.

/healthz answers 200 when the database and (where configured) Redis answer,
else 503 naming what failed — JSON either way, no authentication, exempt from
the HTTPS redirect so a platform's plain-HTTP probe gets an answer.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

OK = "ok"
NOT_CONFIGURED = "not configured"
UNAVAILABLE = "unavailable"
REDIS_TIMEOUT_SECONDS = 2.0


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy"
        logger.warning("healthz: the database does not answer: %s", error)
        return UNAVAILABLE
    return OK


def check_redis() -> str:
    if not settings.REDIS_URL:
        return NOT_CONFIGURED
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001
        logger.warning("healthz: Redis does not answer: %s", error)
        return UNAVAILABLE
    finally:
        client.close()
    return OK


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok", "database": "ok", "redis": "ok" | "not configured"}, or 503."""
    checks = {"database": check_database(), "redis": check_redis()}
    failed = [name for name, state in checks.items() if state == UNAVAILABLE]
    body = {"status": "error" if failed else OK, **checks, "mode": mode_name()}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


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
