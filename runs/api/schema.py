"""The OpenAPI schema's error answers: every operation documents the JSON errors it may give.

Every error of the API has one shape (runs/api/errors.py): {"error": <code>,
"message": <text>, ...}. drf-spectacular documents only the success answers
of each view, so a client (or schemathesis) found a 400, 401, 404 or 503 that
the schema did not mention.
"""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer: a code, a human message and, for some, more detail.",
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. invalid_plan, not_found."},
        "message": {"type": "string", "description": "What went wrong, for a person."},
    },
    "required": ["error", "message"],
    "additionalProperties": True,
}

ERRORS = {
    "400": "The request is malformed or invalid (JSON, plan, query parameters, body size).",
    "401": "No credentials, or invalid ones.",
    "403": "Not allowed (e.g. a session write without its CSRF token).",
    "404": "No such resource, or not the caller's.",
    "405": "The method is not allowed here.",
    "406": "Only application/json is served.",
    "415": "The body is not application/json.",
    "503": "The database is briefly unavailable; retry after the Retry-After header's seconds.",
}
WRITE_ERRORS = {
    "308": "The URL ends with a slash; repeat the request at the Location given.",
    "409": "The run's state does not allow it (e.g. cancelling a finished run).",
    "429": (
        "A create over the user's quota (quota_exceeded): too many runs queued or processing"
        " (RUNS_MAX_ACTIVE_PER_USER) or created in the last minute (RUNS_MAX_CREATES_PER_MINUTE);"
        " `limit` says which; retry after the Retry-After header's seconds (also `retry_after`)."
    ),
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the error answers on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            responses = operation.setdefault("responses", {})
            errors = dict(ERRORS)
            if method in ("post", "put", "patch", "delete"):
                errors.update(WRITE_ERRORS)
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": error})
    return result
