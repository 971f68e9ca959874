"""The run timeline's model (web/static/web/run-timeline-model.js: events → bars and marks), under node.

Its tests live in tests/web/js/ and run with node's built-in test runner; this
test runs them so that `make test` and CI do too.
"""

from pathlib import Path

from tests.node import assert_node_tests_pass


def test_timeline_model_unit_tests_pass_under_node():
    assert_node_tests_pass(Path(__file__).parent / "js")
