"""The import graph of realtime/: no cycle, and runs/ never imports realtime.

Every import counts, also those inside functions (a lazy import hides a cycle
from Python, not from a reader). Read with ``ast``, so nothing is executed.
"""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("realtime", "runs")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the project modules it imports (of PACKAGES)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                # ``from pkg import mod`` imports the module pkg.mod when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _graph_without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its modules is not a cycle with them."""
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def test_realtime_has_no_import_cycle():
    graph = _graph_without_packages(import_graph())
    realtime = {
        m: {t for t in ts if t.startswith("realtime")} for m, ts in graph.items() if m.startswith("realtime")
    }
    assert find_cycle(realtime) is None


def test_runs_has_no_import_cycle():
    graph = _graph_without_packages(import_graph())
    runs = {m: {t for t in ts if t.startswith("runs")} for m, ts in graph.items() if m.startswith("runs")}
    assert find_cycle(runs) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_runs_never_imports_realtime():
    graph = import_graph()
    assert {
        (m, t)
        for m, targets in graph.items()
        if m.startswith("runs")
        for t in targets
        if t.startswith("realtime")
    } == set()


def test_the_frame_format_and_the_readers_do_not_depend_on_the_writer():
    graph = import_graph()
    assert graph["realtime.frames"] == set()
    for reader in ("realtime.selectors", "realtime.delivery.poller", "realtime.publisher"):
        assert "realtime.log" not in graph[reader], reader
    # Only the publisher sends to the channel layer; it reports failures through a hook.
    assert not any(
        t.startswith("realtime.") and t != "realtime.frames" and t != "realtime.models"
        for t in graph["realtime.publisher"]
    )


def test_only_the_publisher_calls_group_send():
    callers = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "group_send":
                callers.add(name)
    assert callers == {"realtime.publisher"}
