"""The new-run form, built from the tool registry: each tool's declared arguments become fields.

The page posts rows ``step-<n>-tool`` and ``step-<n>-arg-<tool>-<name>`` (a row
shows the fields of the tool picked in it); a tool that accepts any
arguments gets a name/value pair. ``parse_steps`` turns the post into the
plan the service validates; a row without a tool is ignored. The rows are
bounded as the API's plan is: more steps than ``RUNS_MAX_STEPS`` are refused,
never dropped, and a page shown again never has more rows than that (plus
the one too many), whatever row numbers the post names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from runs.tools import Tool
from runs.validation import InputError, load_json

INITIAL_ROWS = 3

# A row number longer than this is no row a page made (nor one it shows again).
_ROW_DIGITS = 9
_ROW_FIELD = re.compile(r"step-(\d+)-")

INPUT_TYPES = {"number": "number", "integer": "number", "string": "text", "boolean": "checkbox"}


@dataclass(frozen=True)
class ArgField:
    """One input of a tool's argument on the form."""

    tool: str
    name: str
    type: str
    required: bool
    default: Any
    minimum: float | None
    maximum: float | None
    help: str

    @property
    def input_type(self) -> str:
        return INPUT_TYPES.get(self.type, "textarea")

    @property
    def step(self) -> str:
        return "1" if self.type == "integer" else "any"


def tool_fields(tools: list[Tool]) -> list[dict]:
    """Per tool: its name, description and argument fields (what the template renders)."""
    described = []
    for tool in tools:
        spec = tool.describe()
        fields = [
            ArgField(
                tool=spec["name"],
                name=name,
                type=arg["type"],
                required=arg["required"],
                default=arg.get("default"),
                minimum=arg.get("minimum"),
                maximum=arg.get("maximum"),
                help=arg.get("help", ""),
            )
            for name, arg in spec["args"].items()
        ]
        described.append(
            {
                "name": spec["name"],
                "description": spec["description"],
                "fields": fields,
                "any_args": spec["accepts_any_args"],
            }
        )
    return described


class FormError(ValueError):
    """``row``: the form's step row; ``field``: the tool's argument at fault ("tool": the tool)."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.row = row
        self.field = field


def _value(field: ArgField, raw: str | None, row: int) -> Any:
    if field.type == "boolean":
        return raw is not None
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    try:
        if field.type == "integer":
            return int(raw)
        if field.type == "number":
            number = float(raw)
            return int(number) if number.is_integer() and "." not in raw else number
        if field.type in ("object", "array"):
            # Nested a level deeper than args may be: the plan's check then says how deep is allowed.
            return load_json(raw, max_depth=settings.RUNS_MAX_ARGS_DEPTH + 1)
    except InputError as error:
        raise FormError(f"{field.name} must be a {field.type}: {error.message}", row=row) from None
    except ValueError:
        raise FormError(f"{field.name} must be a {field.type}", row=row, field=field.name) from None
    return raw


def _posted_rows(post) -> tuple[list[int], bool]:
    """The row numbers the fields of ``post`` name, in order, and whether one is too long to be a row."""
    rows, too_long = set(), False
    for key in post:
        match = _ROW_FIELD.match(key)
        if match and len(match.group(1)) > _ROW_DIGITS:
            too_long = True
        elif match:
            rows.add(int(match.group(1)))
    return sorted(rows), too_long


def rows_to_show(post) -> range:
    """The rows of a form shown again: every row posted, up to one past the most a run may have."""
    rows, _ = _posted_rows(post)
    highest = max(rows, default=-1)
    return range(max(INITIAL_ROWS, min(highest + 1, settings.RUNS_MAX_STEPS + 1)))


def parse_steps(post, tools: dict[str, list[ArgField] | None]) -> tuple[list[dict], list[int]]:
    """The plan the rows of ``post`` describe, and the row of each step (empty rows are skipped).

    ``tools``: name → fields (None: the tool takes any arguments).
    """
    limit = settings.RUNS_MAX_STEPS
    posted, too_long = _posted_rows(post)
    if too_long:
        raise FormError(f"a run has at most {limit} steps; the form has no row numbered that high")
    picked = [row for row in posted if (post.get(f"step-{row}-tool") or "").strip()]
    if len(picked) > limit:
        raise FormError(
            f"a run has at most {limit} steps, got {len(picked)}: "
            "set the tool of the steps you do not need to “— none —”"
        )
    steps, rows = [], []
    for row in picked:
        name = post[f"step-{row}-tool"].strip()
        if name not in tools:
            raise FormError(f"unknown tool {name!r}", row=row, field="tool")
        fields = tools[name]
        args: dict[str, Any] = {}
        if fields is None:
            key = (post.get(f"step-{row}-any-{name}-name") or "").strip()
            value = post.get(f"step-{row}-any-{name}-value") or ""
            if key:
                args[key] = value
        else:
            for field in fields:
                value = _value(field, post.get(f"step-{row}-arg-{name}-{field.name}"), row)
                if value is not None:
                    args[field.name] = value
        steps.append({"tool": name, "args": args})
        rows.append(row)
    if not steps:
        raise FormError("pick a tool for at least one step")
    return steps, rows
