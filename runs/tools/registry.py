"""Tool registration, argument declarations and plan validation."""

from __future__ import annotations

import importlib
import inspect
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from runs.validation import value_problem

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class ToolError(Exception):
    """Raised by a tool to fail its step with a message."""


class PlanError(ValueError):
    """A plan that cannot run: says which step and argument is wrong."""

    def __init__(self, message: str, *, step: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.step = step
        self.field = field


@dataclass(frozen=True)
class Arg:
    """One declared argument of a tool."""

    type: str
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | Callable[[], float] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"unknown argument type {self.type!r}")

    def resolved_maximum(self) -> float | None:
        return self.maximum() if callable(self.maximum) else self.maximum

    def check(self, name: str, value: Any) -> str | None:
        """Return a message when ``value`` is not acceptable, else None."""
        expected = _TYPES[self.type]
        # bool is an int in Python; a JSON true is not a number.
        if isinstance(value, bool) and self.type != "boolean":
            return f"argument '{name}' must be a {self.type}, got a boolean"
        if not isinstance(value, expected):
            return f"argument '{name}' must be a {self.type}, got {_json_type(value)}"
        if self.type in ("number", "integer"):
            if isinstance(value, float) and not math.isfinite(value):
                return f"argument '{name}' must be a finite number"
            if self.minimum is not None and value < self.minimum:
                return f"argument '{name}' must be at least {self.minimum:g}, got {value}"
            maximum = self.resolved_maximum()
            if maximum is not None and value > maximum:
                return f"argument '{name}' must be at most {maximum:g}, got {value}"
        return None

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": self.type, "required": self.required}
        if not self.required:
            described["default"] = self.default
        if self.minimum is not None:
            described["minimum"] = self.minimum
        maximum = self.resolved_maximum()
        if maximum is not None:
            described["maximum"] = maximum
        if self.help:
            described["help"] = self.help
        return described


@dataclass(frozen=True)
class StepExecution:
    """Which execution of which step a tool call is: what a tool needs to be idempotent.

    Steps run at least once: a step whose executor was lost is executed again
    (``attempt`` 2, 3 …). ``key`` is the same for every attempt of a step (an
    idempotency key for an external API); ``attempt_id`` differs per attempt.
    A tool receives it when its function takes an ``execution`` keyword argument.
    """

    run_id: uuid.UUID
    step_index: int
    attempt: int

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.step_index}"

    @property
    def attempt_id(self) -> str:
        return f"{self.key}:{self.attempt}"


EXECUTION_ARG = "execution"


def _takes_execution(func: Callable[..., Any]) -> bool:
    parameter = inspect.signature(func).parameters.get(EXECUTION_ARG)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


@dataclass(frozen=True)
class Tool:
    name: str
    func: Callable[..., Any]
    args: dict[str, Arg] = field(default_factory=dict)
    description: str = ""
    accepts_any_args: bool = False
    takes_execution: bool = False

    def validate(self, args: Any) -> dict[str, Any]:
        """Return the arguments with defaults filled in, or raise PlanError."""
        if not isinstance(args, dict):
            raise PlanError(f"args of tool '{self.name}' must be an object, got {_json_type(args)}")
        if self.takes_execution and EXECUTION_ARG in args:
            raise PlanError(
                f"tool '{self.name}' has no argument '{EXECUTION_ARG}' (the executor passes it)",
                field=EXECUTION_ARG,
            )
        if not self.accepts_any_args:
            unknown = sorted(set(args) - set(self.args))
            if unknown:
                raise PlanError(f"tool '{self.name}' has no argument '{unknown[0]}'", field=unknown[0])
        cleaned = dict(args)
        for name, spec in self.args.items():
            if name not in args:
                if spec.required:
                    raise PlanError(f"tool '{self.name}' needs argument '{name}'", field=name)
                cleaned[name] = spec.default
                continue
            problem = spec.check(name, args[name])
            if problem:
                raise PlanError(problem, field=name)
        return cleaned

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "args": {name: spec.describe() for name, spec in self.args.items()},
            "accepts_any_args": self.accepts_any_args,
        }

    def __call__(self, **kwargs: Any) -> Any:
        return self.func(**kwargs)

    def execute(self, args: dict[str, Any], execution: StepExecution) -> Any:
        """Call the tool for one attempt of a step; ``execution`` only if it takes one."""
        if self.takes_execution:
            return self.func(**args, execution=execution)
        return self.func(**args)


_registry: dict[str, Tool] = {}


def tool(
    name: str, *, args: dict[str, Arg] | None = None, accepts_any_args: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated callable as the tool ``name``."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _registry and _registry[name].func is not func:
            raise ValueError(f"tool {name!r} is already registered")
        description = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        _registry[name] = Tool(
            name=name,
            func=func,
            args=dict(args or {}),
            description=description,
            accepts_any_args=accepts_any_args,
            takes_execution=_takes_execution(func),
        )
        return func

    return register


def get_tool(name: str) -> Tool | None:
    return _registry.get(name)


def list_tools() -> list[Tool]:
    return [_registry[name] for name in sorted(_registry)]


def load_tool_modules() -> None:
    """Import every module in settings.RUNS_TOOL_MODULES (they register tools)."""
    for module in settings.RUNS_TOOL_MODULES:
        importlib.import_module(module)


def validate_plan(steps: Any, *, max_steps: int) -> list[dict[str, Any]]:
    """Check a submitted plan; return it normalised as [{tool, args}, ...]."""
    if not isinstance(steps, list):
        raise PlanError(f"steps must be a list, got {_json_type(steps)}")
    if not steps:
        raise PlanError("a run needs at least one step")
    if len(steps) > max_steps:
        raise PlanError(f"a run has at most {max_steps} steps, got {len(steps)}")
    plan = []
    for index, spec in enumerate(steps):
        try:
            plan.append(_validate_step(spec))
        except PlanError as error:
            # The message counts from 1, as people do; `step` is the plan's 0-based index.
            raise PlanError(f"step {index + 1}: {error.message}", step=index, field=error.field) from None
    return plan


def _validate_step(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise PlanError(f"a step must be an object, got {_json_type(spec)}")
    # Before anything quotes the step's text in a message: a message must be sendable too.
    problem = value_problem(spec, path="", texts_only=True)
    if problem:
        raise PlanError(problem, field="args" if problem.startswith("args") else None)
    unknown = sorted(set(spec) - {"tool", "args"})
    if unknown:
        raise PlanError(f"unknown step field '{unknown[0]}'", field=unknown[0])
    name = spec.get("tool")
    if not isinstance(name, str) or not name:
        raise PlanError("a step needs a 'tool' name", field="tool")
    found = get_tool(name)
    if found is None:
        raise PlanError(f"unknown tool '{name}'", field="tool")
    args = found.validate(spec.get("args", {}))
    problem = value_problem(args, path="args", max_depth=settings.RUNS_MAX_ARGS_DEPTH)
    if problem:
        raise PlanError(problem, field="args")
    return {"tool": name, "args": args}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
