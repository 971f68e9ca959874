"""The built-in tools: echo, wait and fail."""

import time
from typing import Any

from django.conf import settings

from runs.tools.registry import Arg, ToolError, tool


@tool("echo", accepts_any_args=True)
def echo(**args: Any) -> dict[str, Any]:
    """Return its arguments unchanged."""
    return args


@tool(
    "wait",
    args={
        "seconds": Arg(
            "number",
            minimum=0,
            maximum=lambda: settings.RUNS_WAIT_MAX_SECONDS,
            help="How long to sleep.",
        )
    },
)
def wait(*, seconds: float) -> dict[str, Any]:
    """Sleep for a number of seconds, then return how long it slept."""
    time.sleep(seconds)
    return {"waited": seconds}


@tool("fail", args={"message": Arg("string", required=False, default="failed on purpose")})
def fail(*, message: str) -> None:
    """Fail the step with a message."""
    raise ToolError(message)
