"""A tool module for RUNS_TOOL_MODULES tests: importing it registers ``shout``."""

from runs.tools import Arg, tool


@tool("shout", args={"text": Arg("string", help="What to shout.")})
def shout(*, text: str) -> str:
    """Return the text in capitals."""
    return text.upper()
