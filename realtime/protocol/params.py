"""The parameters a client names a run and a resume point with, judged alike over HTTP and WebSocket.

A run id is the canonical form the server gives out (``ws_url``, ``id``):
lowercase, with hyphens — Django's ``<uuid:>`` path converter's pattern, so
``/api/runs/<id>/…`` (404 otherwise) and ``/ws/runs/<id>/`` (4400) accept
exactly the same ids. A seq (``since``) is ASCII digits, as many as Python
reads without complaint (a since past the log's last seq is a client from
another history, not an error): ``int()`` would also take ``1_0``,
Arabic-Indic digits or padding spaces, and word its refusals for Python
programmers. Every refusal here is a message of our own.
"""

from __future__ import annotations

import re
import uuid

from django.urls.converters import UUIDConverter

from runs.validation import MAX_INTEGER_DIGITS

_RUN_ID = re.compile(UUIDConverter.regex)
_WHOLE_NUMBER = re.compile(f"[0-9]{{1,{MAX_INTEGER_DIGITS}}}")


class ParamError(ValueError):
    """A parameter refused, with a message for the client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def parse_run_id(text: str) -> uuid.UUID:
    """The run id ``text`` names, in canonical form only; else ParamError."""
    if _RUN_ID.fullmatch(text):
        return uuid.UUID(text)
    try:
        uuid.UUID(text)
    except ValueError:
        raise ParamError("the run id is not a UUID") from None
    raise ParamError("the run id must be a UUID in lowercase with hyphens, as the server gives it")


def parse_whole_number(text: str, *, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """``text`` as a whole number from ``minimum`` (to ``maximum``), in ASCII digits; else ParamError."""
    if _WHOLE_NUMBER.fullmatch(text):
        number = int(text)
        if number >= minimum and (maximum is None or number <= maximum):
            return number
    if maximum is None:
        raise ParamError(f"{name} must be a non-negative whole number")
    raise ParamError(f"{name} must be a whole number from {minimum} to {maximum}")
