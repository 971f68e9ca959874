"""HTTP edge cases handled before (or around) the views, for every path.

- A body sent with ``Transfer-Encoding: chunked`` declares no Content-Length,
  and Django and DRF then read it as empty ("steps: This field is required"):
  the server has the whole body by then, so its length is filled in and it is
  read — and size-checked — like any other.
- A write to a path missing its trailing slash was answered 301, which clients
  follow as a GET (the POST silently lost): writes get a 308 instead, which
  keeps the method and body, with a JSON message.
- A database connection lost mid-request (PostgreSQL restarted, a backend
  terminated) answers 503 with Retry-After, not a 500: the next request gets a
  fresh connection.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.utils.http import escape_leading_slashes

from runs.api.errors import database_unavailable_response, is_lost_connection

logger = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def chunked_body_middleware(get_response):
    def middleware(request: HttpRequest) -> HttpResponse:
        if request.method in _BODY_METHODS and not request.META.get("CONTENT_LENGTH"):
            # Django's ASGI request keeps the body it received in a temporary file.
            stream = getattr(request, "_stream", None)
            seekable = getattr(stream, "seekable", None)
            if seekable is not None and seekable():
                size = stream.seek(0, 2)
                stream.seek(0)
                if size:
                    request.META["CONTENT_LENGTH"] = str(size)
        return get_response(request)

    return middleware


class CommonMiddleware(DjangoCommonMiddleware):
    """Django's, except that a write to a path without its slash is a 308 with a JSON message."""

    def get_full_path_with_slash(self, request: HttpRequest) -> str:
        # Django refuses (DEBUG) or 301s a write; process_response below 308s it instead.
        return escape_leading_slashes(request.get_full_path(force_append_slash=True))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code == 404
            and request.method not in ("GET", "HEAD")
            and self.should_redirect_with_slash(request)
        ):
            location = self.get_full_path_with_slash(request)
            moved = JsonResponse(
                {
                    "error": "moved",
                    "message": f"this URL ends with a slash: {request.method} {location}",
                    "location": location,
                },
                status=308,
            )
            moved["Location"] = location
            return super().process_response(request, moved)
        return super().process_response(request, response)


class DatabaseUnavailableMiddleware:
    """A lost database connection in a view is a 503 with Retry-After, not a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_lost_connection(exception):
            return None
        logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
        # Drop the broken connection now, so the next request opens a fresh one.
        close_old_connections()
        return database_unavailable_response()
