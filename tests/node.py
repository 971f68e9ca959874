"""Runs a directory's JavaScript unit tests (*.test.mjs) with node's built-in test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def assert_node_tests_pass(directory: Path) -> None:
    """Fail unless node runs at least one test of ``directory`` and none fails."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript unit tests cannot run")
    tests = sorted(str(path) for path in directory.glob("*.test.mjs"))
    assert tests, f"no JavaScript tests found in {directory}"
    result = subprocess.run(
        [node, "--test", *tests], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout
