"""The browser client's own unit tests (reducer, backoff, reconnects, polling fallback), under node.

They live in tests/realtime/js/ and run with node's built-in test runner; this test
runs them so that `make test` and CI do too, and fails when any of them fails.
"""

from pathlib import Path

from tests.node import assert_node_tests_pass


def test_client_unit_tests_pass_under_node():
    assert_node_tests_pass(Path(__file__).parent / "js")
