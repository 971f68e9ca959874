"""A JSON parser that refuses bodies over the size limit with a clear 400."""

import json
import sys

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from runs.api.errors import BodyTooLarge


class LimitedJSONParser(JSONParser):
    """Refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE and too deeply nested JSON with a 400.

    DRF (3.15+) reads ``request.body`` for JSON, so Django's limit usually
    fires first (mapped to the same 400 in runs.api.errors); this check covers
    streams read directly.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the request body is over the {limit} byte limit")
        if stream is None:
            return super().parse(stream, media_type, parser_context)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise BodyTooLarge(f"the request body is over the {limit} byte limit")
        try:
            text = body.decode((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
        except (UnicodeDecodeError, LookupError):
            raise ParseError("JSON parse error - the body is not UTF-8 text") from None
        try:
            return json.loads(text, parse_int=_parse_int, parse_constant=_refuse_constant)
        except RecursionError:
            # json raises this (not a ValueError) for deeply nested arrays/objects.
            raise ParseError("JSON parse error - the document is nested too deeply") from None
        except _Refused as refused:
            raise ParseError(f"JSON parse error - {refused}") from None
        except ValueError as error:  # json.JSONDecodeError: says where, in JSON terms
            raise ParseError(f"JSON parse error - {error}") from None


class _Refused(ValueError):
    """A JSON value we refuse, with a message in JSON's terms (not Python's)."""


MAX_INTEGER_DIGITS = sys.get_int_max_str_digits() or 4300


def _parse_int(digits: str) -> int:
    # Python's own refusal names sys.set_int_max_str_digits(): a message for Python programmers.
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Refused(f"a number has more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _refuse_constant(name: str):
    raise _Refused(f"{name} is not a JSON number")
