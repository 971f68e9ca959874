"""pytest plugin of `make mutate`: a mutant's selection, the tests that reach its change first.

mutation/run.py runs a module's selection once under coverage before its
mutants and writes, for each line of the module, the tests that execute it
(MUTATION_FOCUS names that file). For each mutant, cosmic-ray's test command
loads this plugin (``-p mutation.focus``): it compares the module on disk (the
mutant) with its unmutated copy, and moves the tests that reach the changed
lines to the front of the session, in their own order (so a file's tests stay
together). Nothing is deselected: every test of the selection still runs
unless one fails first (``-x``), so a mutant survives exactly when it survives
the whole selection, and a line only a Daphne or Celery process runs (which
coverage does not see here) is still tested by the tests behind it.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest


def changed_lines(pristine: list[str], mutant: list[str]) -> set[int]:
    """The lines (1-based, of the unmutated module) the mutant changed or removed."""
    lines: set[int] = set()
    matcher = difflib.SequenceMatcher(a=pristine, b=mutant, autojunk=False)
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        # An insertion has no line of its own: the line before it stands for it.
        lines.update(range(i1 + 1, i2 + 1) if i2 > i1 else [max(i1, 1)])
    return lines


def focus(items: list, reaching: set[str]) -> list:
    """The items that reach the change first, then the others; each part in its given order."""
    first = [item for item in items if item.nodeid in reaching]
    return first + [item for item in items if item.nodeid not in reaching]


@pytest.hookimpl(trylast=True)  # after the conftests have deselected and pytest-django has sorted
def pytest_collection_modifyitems(config, items):
    path = os.environ.get("MUTATION_FOCUS")
    if not path:
        return
    focus_map = json.loads(Path(path).read_text())
    module = Path(config.rootpath) / focus_map["module"]
    changed = changed_lines(
        Path(focus_map["pristine"]).read_text().splitlines(), module.read_text().splitlines()
    )
    reaching = {test for line in changed for test in focus_map["lines"].get(str(line), ())}
    items[:] = focus(items, reaching)
