"""A JSON parser that refuses bodies over the size limit with a clear 400."""

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from runs.api.errors import BodyTooLarge
from runs.validation import JSON_MAX_DEPTH, InputError, load_json


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
            return load_json(text, max_depth=JSON_MAX_DEPTH)
        except InputError as error:
            raise ParseError(f"JSON parse error - {error.message}") from None
