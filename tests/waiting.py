"""Waiting for a condition a real process brings about, with a bound (not a timing assertion)."""

import time

import pytest

WAIT = 60.0


def wait_for(predicate, *, timeout: float = WAIT, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
