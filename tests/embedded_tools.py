"""A tool module the embedded-mode tests load into `make run` (RUNS_TOOL_MODULES).

``gate`` blocks its run until a file exists, so a test decides when a run
proceeds instead of guessing with sleeps.
"""

import time
from pathlib import Path

from django.conf import settings

from runs.tools import Arg, ToolError, tool


@tool("gate", args={"path": Arg("string", help="The step finishes once this file exists.")})
def gate(*, path: str) -> dict[str, str]:
    """Wait until ``path`` exists (at most RUNS_WAIT_MAX_SECONDS)."""
    deadline = time.monotonic() + settings.RUNS_WAIT_MAX_SECONDS
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise ToolError(f"{path} did not appear")
        time.sleep(0.02)
    return {"opened": path}
