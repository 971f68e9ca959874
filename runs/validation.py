"""What a run may store: text PostgreSQL accepts, values bounded in size and nesting.

The one judgement of user input for every write path — the API, the web form,
the admin and the services behind them — so that input one of them refuses
with a clear message is never a 500 through another.

PostgreSQL's text and jsonb refuse NUL characters, and a string holding a lone
surrogate (``"\\ud800"``: valid in a JSON escape and in a Python str, but not
encodable as UTF-8) fails in the driver; jsonb refuses NaN and Infinity. A
value nested deeper than the limit would exhaust Python's recursion limit when
the run is encoded, decoded or streamed. Every walk here is iterative, so no
input can break the check itself.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

PROMPT_MAX_LENGTH = 20_000

# Python's own refusal names sys.set_int_max_str_digits(): a message for Python programmers.
MAX_INTEGER_DIGITS = sys.get_int_max_str_digits() or 4300

_SURROGATE = re.compile("[\ud800-\udfff]")


class InputError(ValueError):
    """Input that cannot be stored, with a message for the person who sent it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def text_problem(text: str, what: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (``what`` names it in the message), else None."""
    if "\x00" in text:
        return f"{what} must not contain NUL characters"
    if _SURROGATE.search(text):
        return f"{what} must not contain lone surrogates (text that is not valid Unicode)"
    return None


def prompt_problem(prompt: Any) -> str | None:
    """Why ``prompt`` is not a run's prompt, else None."""
    if not isinstance(prompt, str):
        return "prompt must be a string"
    if len(prompt) > PROMPT_MAX_LENGTH:
        return f"prompt must be at most {PROMPT_MAX_LENGTH} characters, got {len(prompt)}"
    return text_problem(prompt, "prompt")


def value_problem(
    value: Any, *, path: str, max_depth: int | None = None, texts_only: bool = False
) -> str | None:
    """Why JSON ``value`` cannot be stored and executed, else None.

    Checks every string and dict key at any depth, every float (unless
    ``texts_only``) and, given ``max_depth``, the nesting; ``path`` names
    ``value`` in the message (``args.items[2]``; empty: the keys of ``value``
    start the path).
    """
    pending: list[tuple[Any, str, int]] = [(value, path, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item, where or "a value")
            if problem:
                return problem
        elif isinstance(item, float) and not texts_only:
            if not math.isfinite(item):
                return f"{where} must be a finite number"
        elif isinstance(item, (dict, list)):
            if max_depth is not None and depth >= max_depth:
                return f"{where} is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key, inner in reversed(list(item.items())):
                    if isinstance(key, str):
                        problem = text_problem(key, f"{where} keys" if where else "a key")
                        if problem:
                            return problem
                    inner_path = f"{where}.{_printable(key)}" if where else _printable(key)
                    pending.append((inner, inner_path, depth + 1))
            else:
                for position in reversed(range(len(item))):
                    pending.append((item[position], f"{where}[{position}]", depth + 1))
    return None


def json_depth(text: str) -> int:
    """How deeply the JSON document ``text`` nests, counted without parsing (or recursing)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


# How deeply a JSON document may nest before it is parsed at all: json.loads recurses once a
# level, so past Python's recursion limit (less the caller's own stack) it raises
# RecursionError, at a depth that depends on where it is called from. A bound well below
# that makes the refusal the same everywhere; plans themselves stop at RUNS_MAX_ARGS_DEPTH.
JSON_MAX_DEPTH = 512


def load_json(text: str, *, max_depth: int | None = None) -> Any:
    """Parse JSON ``text``; raise InputError, with a message in JSON's terms, when it is not acceptable.

    Refuses NaN/Infinity, integers over MAX_INTEGER_DIGITS digits and, with
    ``max_depth``, documents nested deeper than that (checked before parsing).
    """
    if max_depth is not None and json_depth(text) > max_depth:
        raise InputError(f"the document is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_refuse_constant)
    except RecursionError:
        # json raises this (not a ValueError) for deeply nested arrays/objects.
        raise InputError("the document is nested too deeply") from None
    except InputError:
        raise
    except ValueError as error:  # json.JSONDecodeError: says where, in JSON terms
        raise InputError(str(error)) from None


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InputError(f"a number has more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _refuse_constant(name: str):
    raise InputError(f"{name} is not a JSON number")


def _printable(key: Any) -> str:
    """A dict key as it goes into a message: text that can itself be sent (checked keys only get here)."""
    return key if isinstance(key, str) else repr(key)
