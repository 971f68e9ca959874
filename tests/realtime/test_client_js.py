"""The browser client's own unit tests (reducer, backoff, reconnects, polling fallback), under node.

They live in tests/realtime/js/ and run with node's built-in test runner; this test
runs them so that `make test` and CI do too, and fails when any of them fails.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"


def test_client_unit_tests_pass_under_node():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the browser client's unit tests cannot run")
    tests = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert tests, "no JavaScript tests found"
    result = subprocess.run(
        [node, "--test", *tests], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout
