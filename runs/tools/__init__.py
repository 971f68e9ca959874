"""The tool registry: named callables a plan's steps call.

A tool is registered with ``@tool("name", args={...})``; its declared
arguments let a plan be validated when the run is created, not at run time.
"""

from runs.tools.registry import (
    Arg,
    PlanError,
    StepExecution,
    Tool,
    ToolError,
    get_tool,
    list_tools,
    load_tool_modules,
    tool,
    validate_plan,
)

__all__ = [
    "Arg",
    "PlanError",
    "StepExecution",
    "Tool",
    "ToolError",
    "get_tool",
    "list_tools",
    "load_tool_modules",
    "tool",
    "validate_plan",
]
