"""The tool registry: registration, plan validation, tool modules, GET /api/tools/."""

import math
import sys

import pytest
from django.test import override_settings

from runs.tools import Arg, PlanError, ToolError, get_tool, list_tools, load_tool_modules, tool, validate_plan
from runs.tools.builtin import fail, wait


def plan_error(steps, max_steps=50) -> PlanError:
    with pytest.raises(PlanError) as caught:
        validate_plan(steps, max_steps=max_steps)
    return caught.value


# --- Registration -------------------------------------------------------------------


def test_builtins_are_registered():
    assert {"echo", "wait", "fail"} <= {t.name for t in list_tools()}
    assert [t.name for t in list_tools()] == sorted(t.name for t in list_tools())


def test_decorator_registers_with_declared_args_and_docstring(temporary_tools):
    @tool("add_h1", args={"a": Arg("integer"), "b": Arg("integer", required=False, default=1)})
    def add(*, a: int, b: int) -> int:
        """Add two integers.

        More text that is not the description.
        """
        return a + b

    found = get_tool("add_h1")
    assert found.func is add and found.description == "Add two integers."
    assert found(a=2, b=3) == 5
    assert validate_plan([{"tool": "add_h1", "args": {"a": 2}}], max_steps=5) == [
        {"tool": "add_h1", "args": {"a": 2, "b": 1}}
    ]
    # Registering the same function again is harmless (a module imported twice) ...
    tool("add_h1", args={"a": Arg("integer")})(add)
    # ... another function under a taken name is a mistake.
    with pytest.raises(ValueError, match="already registered"):
        tool("add_h1")(lambda: None)


def test_an_argument_of_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown argument type"):
        Arg("decimal")


def test_builtin_tools_behave():
    assert get_tool("echo")(a=1, b=[2]) == {"a": 1, "b": [2]}
    assert wait(seconds=0) == {"waited": 0}
    with pytest.raises(ToolError, match="nope"):
        fail(message="nope")


# --- Plan validation ----------------------------------------------------------------


def test_a_valid_plan_is_normalised():
    plan = validate_plan(
        [{"tool": "echo"}, {"tool": "wait", "args": {"seconds": 1.5}}, {"tool": "fail", "args": {}}],
        max_steps=3,
    )
    assert plan == [
        {"tool": "echo", "args": {}},
        {"tool": "wait", "args": {"seconds": 1.5}},
        {"tool": "fail", "args": {"message": "failed on purpose"}},
    ]


@pytest.mark.parametrize(
    ("steps", "message", "step", "field"),
    [
        ({"tool": "echo"}, "steps must be a list, got an object", None, None),
        ("echo", "steps must be a list, got a string", None, None),
        (None, "steps must be a list, got null", None, None),
        ([], "a run needs at least one step", None, None),
        (["echo"], "step 1: a step must be an object, got a string", 0, None),
        ([{"tool": "echo"}, 7], "step 2: a step must be an object, got a number", 1, None),
        ([{"args": {}}], "step 1: a step needs a 'tool' name", 0, "tool"),
        ([{"tool": ""}], "step 1: a step needs a 'tool' name", 0, "tool"),
        ([{"tool": 3}], "step 1: a step needs a 'tool' name", 0, "tool"),
        ([{"tool": "nope"}], "step 1: unknown tool 'nope'", 0, "tool"),
        ([{"tool": "echo", "when": 1}], "step 1: unknown step field 'when'", 0, "when"),
        (
            [{"tool": "echo", "args": [1]}],
            "step 1: args of tool 'echo' must be an object, got an array",
            0,
            None,
        ),
        ([{"tool": "wait"}], "step 1: tool 'wait' needs argument 'seconds'", 0, "seconds"),
        (
            [{"tool": "wait", "args": {"seconds": "3"}}],
            "step 1: argument 'seconds' must be a number, got a string",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": True}}],
            "step 1: argument 'seconds' must be a number, got a boolean",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": None}}],
            "step 1: argument 'seconds' must be a number, got null",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": -1}}],
            "step 1: argument 'seconds' must be at least 0, got -1",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": 61}}],
            "step 1: argument 'seconds' must be at most 60, got 61",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": math.inf}}],
            "step 1: argument 'seconds' must be a finite number",
            0,
            "seconds",
        ),
        (
            [{"tool": "wait", "args": {"seconds": 1, "unit": "s"}}],
            "step 1: tool 'wait' has no argument 'unit'",
            0,
            "unit",
        ),
        (
            [{"tool": "fail", "args": {"message": 5}}],
            "step 1: argument 'message' must be a string, got a number",
            0,
            "message",
        ),
    ],
)
def test_bad_plans_are_refused_with_a_message(steps, message, step, field):
    error = plan_error(steps)
    assert (error.message, error.step, error.field) == (message, step, field)


def test_too_many_steps():
    assert plan_error([{"tool": "echo"}] * 4, max_steps=3).message == "a run has at most 3 steps, got 4"
    assert len(validate_plan([{"tool": "echo"}] * 3, max_steps=3)) == 3


def test_a_boolean_is_fine_where_a_boolean_is_declared(temporary_tools):
    tool("flag_h1", args={"on": Arg("boolean"), "n": Arg("integer", required=False)})(lambda **kw: kw)
    assert validate_plan([{"tool": "flag_h1", "args": {"on": False}}], max_steps=1)[0]["args"]["on"] is False
    assert (
        "must be a integer, got a number"
        in plan_error([{"tool": "flag_h1", "args": {"on": True, "n": 1.5}}]).message
    )


@pytest.mark.parametrize("args", [{}, {"text": "hi"}, {"a": [1, {"b": None}], "c": True, "d": 1.5}])
def test_echo_accepts_any_args(args):
    assert validate_plan([{"tool": "echo", "args": args}], max_steps=1) == [{"tool": "echo", "args": args}]


@pytest.mark.parametrize(
    "args",
    [
        {"text": "a\x00b"},
        {"a\x00": 1},
        {"nested": [{"deep": "\x00"}]},
        {"x": math.inf},
        {"x": [math.nan]},
    ],
)
def test_values_the_database_cannot_store_are_refused(args):
    # PostgreSQL's jsonb holds neither NUL characters nor NaN/Infinity.
    error = plan_error([{"tool": "echo", "args": args}])
    assert error.step == 0
    assert "NUL" in error.message or "finite" in error.message


def test_wait_maximum_follows_the_setting():
    with override_settings(RUNS_WAIT_MAX_SECONDS=5):
        assert validate_plan([{"tool": "wait", "args": {"seconds": 5}}], max_steps=1)
        assert plan_error([{"tool": "wait", "args": {"seconds": 5.5}}]).message == (
            "step 1: argument 'seconds' must be at most 5, got 5.5"
        )
        assert get_tool("wait").describe()["args"]["seconds"]["maximum"] == 5
    assert validate_plan([{"tool": "wait", "args": {"seconds": 60}}], max_steps=1)


# --- Tool modules -------------------------------------------------------------------


@pytest.fixture
def extra_module(temporary_tools):
    yield "tests.runs.extra_tools"
    sys.modules.pop("tests.runs.extra_tools", None)


def test_runs_tool_modules_loads_an_extra_module(extra_module, settings):
    assert get_tool("shout") is None
    settings.RUNS_TOOL_MODULES = [*settings.RUNS_TOOL_MODULES, extra_module]
    load_tool_modules()
    shout = get_tool("shout")
    assert shout is not None and shout(text="hi") == "HI"
    assert validate_plan([{"tool": "shout", "args": {"text": "x"}}], max_steps=1)
    assert "shout" in [t.name for t in list_tools()]


def test_an_unimportable_tool_module_fails_loudly(settings):
    settings.RUNS_TOOL_MODULES = ["tests.runs.no_such_tools_h1"]
    with pytest.raises(ModuleNotFoundError):
        load_tool_modules()


# --- GET /api/tools/ ------------------------------------------------------------------


@pytest.mark.django_db
def test_api_lists_tools_with_their_arguments(api, settings):
    settings.RUNS_WAIT_MAX_SECONDS = 12
    response = api.get("/api/tools/")
    assert response.status_code == 200
    tools = {t["name"]: t for t in response.json()}
    assert tools["echo"] == {
        "name": "echo",
        "description": "Return its arguments unchanged.",
        "args": {},
        "accepts_any_args": True,
    }
    assert tools["wait"]["args"] == {
        "seconds": {
            "type": "number",
            "required": True,
            "minimum": 0,
            "maximum": 12,
            "help": "How long to sleep.",
        }
    }
    assert tools["fail"]["args"]["message"] == {
        "type": "string",
        "required": False,
        "default": "failed on purpose",
    }


@pytest.mark.django_db
def test_api_tools_needs_authentication(client):
    response = client.get("/api/tools/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
