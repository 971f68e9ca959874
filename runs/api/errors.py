"""Every API error is JSON: {"error": <code>, "message": <text>, ...}. Never a 500 page."""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError, close_old_connections
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from runs.services import QuotaExceeded, TransitionError
from runs.tools import PlanError

logger = logging.getLogger(__name__)

# A database connection lost mid-request (PostgreSQL restarted, a backend terminated) is a 503
# with Retry-After, not a 500: the next request gets a fresh connection. The API's handler below
# and quikday.middleware's DatabaseUnavailableMiddleware (every other path) answer the same.
DATABASE_RETRY_AFTER_SECONDS = 1
DATABASE_UNAVAILABLE = {"error": "unavailable", "message": "the database is briefly unavailable; try again"}


def is_lost_connection(error: BaseException) -> bool:
    return isinstance(error, (OperationalError, InterfaceError))


def database_unavailable_response() -> JsonResponse:
    """503 with Retry-After: the database connection was lost; the client should try again."""
    response = JsonResponse(DATABASE_UNAVAILABLE, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "body_too_large"
    default_detail = "the request body is too large"


def _first_message(detail: Any) -> str:
    """The first human message of a DRF error detail, with its field path."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key in ("non_field_errors", "detail") else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, reshaped; plus the domain's own errors."""
    if isinstance(exc, PlanError):
        body = {"error": "invalid_plan", "message": exc.message}
        if exc.step is not None:
            body["step"] = exc.step
        if exc.field is not None:
            body["field"] = exc.field
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, QuotaExceeded):
        return Response(
            {
                "error": "quota_exceeded",
                "message": exc.message,
                "limit": exc.limit,
                "retry_after": exc.retry_after,
            },
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, TransitionError):
        return Response(
            {"error": "conflict", "message": exc.message, "status": exc.current},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, RequestDataTooBig):
        # DRF reads request.body for JSON itself, so Django's own limit fires before our parser.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {
                "error": BodyTooLarge.default_code,
                "message": f"the request body is over the {limit} byte limit",
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response({"error": "bad_request", "message": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if is_lost_connection(exc):
        logger.warning("database unavailable in the API: %s", exc)
        close_old_connections()
        return Response(
            DATABASE_UNAVAILABLE,
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            {"error": "server_error", "message": "internal error; it has been logged"},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid"
    elif isinstance(exc, exceptions.ParseError):
        code = "malformed_json"
    else:
        code = getattr(exc, "default_code", "error")
    body: dict[str, Any] = {"error": code, "message": _first_message(response.data)}
    if isinstance(exc, exceptions.ValidationError):
        body["detail"] = response.data
    response.data = body
    return response


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse({"error": "not_found", "message": "no such resource"}, status=404)


def json_bad_request(request, exception=None) -> JsonResponse:
    message = str(exception) if exception else "bad request"
    return JsonResponse({"error": "bad_request", "message": message}, status=400)


def json_server_error(request) -> JsonResponse:
    return JsonResponse(
        {"error": "server_error", "message": "internal error; it has been logged"}, status=500
    )
