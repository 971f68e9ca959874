"""The direction of every import between the project's packages, and between realtime's subpackages.

Read from the source with ``ast``, so nothing is executed; every import counts, also
those inside functions (a lazy import hides a dependency from Python, not from a reader).
bench/, mutation/ and tests/ stand above everything and are not checked.

Between top-level packages, each may import only what ``MAY_IMPORT`` names:

    quikday        configuration: settings, urls, asgi, celery. Wires every package below it.
                   Its settings module is read by every other (django.conf), so it imports
                   nothing of theirs but observability's (logging, metrics directory).
    web            the pages: the runs domain, realtime's reads (the run list's summaries)
    realtime       the streams: runs' models and selectors, observability's hooks; only its
                   socket side (consumers, delivery, sockets, runlist) reads Daphne's
                   connections through server.daphne_tuning
    observability  logs, metrics, /healthz, the staff page: the hooks realtime reports into;
                   of the domain it reads only runs.selectors (/metrics' runs by status),
                   never its models or services
    runs           the domain: runs, steps, tools, executor, API; it imports no other app.
                   Never realtime: a run is executed and stored whether anyone watches it or
                   not (realtime's signals see the saves); never observability
    server         the processes' runtime (Daphne, Twisted, kombu): knows none of the apps;
                   quikday.asgi hands it what it needs of them (the close code for a frame too big)
    server.upstream  the registry of reaches into other libraries: imported by any package,
                   imports none of them

Inside realtime/, a subpackage may import only what ``REALTIME_MAY_IMPORT`` names, from the
bottom up: the protocol (a frame's format, close codes, what a client may send) knows nothing
else of realtime; the reads know the protocol; the event log's writer and the publisher know the
reads (retention finds old events with a selector) but no reader knows the writer; access (tickets,
the handshake's authentication) and the HTTP endpoints sit on the reads. The socket side
("streams": consumers, the delivery registries, the run list's feed and pollers) may use all of
them, and the wiring (apps, signals, routing, tasks, management commands) everything.
"""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("quikday", "server", "web", "realtime", "runs", "observability")
UPSTREAM = "server.upstream"

MAY_IMPORT = {
    "quikday": {"server", "web", "realtime", "runs", "observability"},
    "web": {"realtime", "runs", "observability"},
    "realtime": {"runs", "observability", "server"},
    "observability": {"runs"},
    "runs": set(),
    "server": set(),
}
# What observability may read of the domain: its read API, nothing that writes.
OBSERVABILITY_READS = {"runs.selectors"}
# The lowest layers only: every module reads settings.
SETTINGS_MAY_IMPORT = {"observability"}
# Only realtime's socket side reads Daphne's connections; its domain code never imports server.
REALTIME_INTO_SERVER = "streams"

REALTIME_MAY_IMPORT = {
    "models": set(),
    "protocol": set(),
    "reads": {"protocol", "models"},
    "events": {"protocol", "reads", "models"},
    "access": {"reads", "models"},
    "http": {"protocol", "reads", "access", "models"},
    "streams": {"protocol", "reads", "events", "access", "models", "streams"},
    "wiring": {"protocol", "reads", "events", "access", "http", "models", "streams", "wiring"},
}
WIRING = ("realtime.apps", "realtime.signals", "realtime.routing", "realtime.tasks", "realtime.management")

# Imports that break a rule above, each with why it stays. An exception that no longer
# occurs fails the test too: strike it when its fix lands.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


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


def realtime_part(module: str) -> str:
    """Which of REALTIME_MAY_IMPORT's parts a module of realtime/ belongs to."""
    if module == "realtime.models" or module.startswith("realtime.migrations"):
        return "models"
    if module == "realtime" or any(module == w or module.startswith(w + ".") for w in WIRING):
        return "wiring"
    part = module.split(".")[1]
    return part if part in REALTIME_MAY_IMPORT else "streams"


def package_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs between top-level packages that MAY_IMPORT does not allow."""
    found = set()
    for module, targets in graph.items():
        package = module.split(".")[0]
        for target in targets:
            into = target.split(".")[0]
            if target == UPSTREAM or into == package:
                continue
            if module == "quikday.settings":
                allowed = into in SETTINGS_MAY_IMPORT
            elif package == "observability" and into == "runs":
                allowed = target in OBSERVABILITY_READS
            elif package == "realtime" and into == "server":
                allowed = realtime_part(module) == REALTIME_INTO_SERVER
            else:
                allowed = into in MAY_IMPORT[package]
            if not allowed:
                found.add((module, target))
    return found


def realtime_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs inside realtime/ that REALTIME_MAY_IMPORT does not allow."""
    found = set()
    for module, targets in graph.items():
        if module.split(".")[0] != "realtime":
            continue
        part = realtime_part(module)
        for target in targets:
            if target.split(".")[0] != "realtime" or target == "realtime":
                continue
            into = realtime_part(target)
            if into != part and into not in REALTIME_MAY_IMPORT[part]:
                found.add((module, target))
    return found


def test_every_import_between_packages_goes_the_allowed_way():
    violations = package_violations(import_graph())
    assert violations - KNOWN_EXCEPTIONS == set()
    assert KNOWN_EXCEPTIONS - violations == set(), "fixed: strike it from KNOWN_EXCEPTIONS"


def test_every_import_between_realtimes_subpackages_goes_the_allowed_way():
    assert realtime_violations(import_graph()) == set()


def test_the_rules_catch_a_wrong_way_import():
    """The checks themselves: each kind of back-arrow is reported."""
    graph = import_graph()
    graph["runs.services"] = graph["runs.services"] | {"realtime.events.publisher"}
    graph["observability.health"] = graph["observability.health"] | {"runs.models"}
    graph["server.web_command"] = graph["server.web_command"] | {"quikday.settings"}
    graph["realtime.reads.selectors"] = graph["realtime.reads.selectors"] | {"server.daphne_tuning"}
    graph["quikday.settings"] = graph["quikday.settings"] | {"runs.models"}
    assert package_violations(graph) - KNOWN_EXCEPTIONS == {
        ("runs.services", "realtime.events.publisher"),
        ("observability.health", "runs.models"),
        ("server.web_command", "quikday.settings"),
        ("realtime.reads.selectors", "server.daphne_tuning"),
        ("quikday.settings", "runs.models"),
    }
    graph["realtime.protocol.frames"] = {"realtime.models"}
    graph["realtime.reads.summaries"] = graph["realtime.reads.summaries"] | {"realtime.events.log"}
    graph["realtime.events.publisher"] = graph["realtime.events.publisher"] | {"realtime.routing"}
    assert realtime_violations(graph) == {
        ("realtime.protocol.frames", "realtime.models"),
        ("realtime.reads.summaries", "realtime.events.log"),
        ("realtime.events.publisher", "realtime.routing"),
    }


def test_the_project_has_no_import_cycle():
    assert find_cycle(_graph_without_packages(import_graph())) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_frame_format_and_the_readers_do_not_depend_on_the_writer():
    graph = import_graph()
    assert graph["realtime.protocol.frames"] == set()
    pollers = [module for module in graph if module.rpartition(".")[2].endswith("poller")]
    assert pollers
    for reader in pollers:
        assert "realtime.events.log" not in graph[reader], reader
    # Only the publisher sends to the channel layer; it reports failures through a hook.
    assert {t for t in graph["realtime.events.publisher"] if t.startswith("realtime.")} <= {
        "realtime.protocol.frames",
        "realtime.models",
    }


def test_only_the_publisher_calls_group_send():
    callers = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "group_send":
                callers.add(name)
    assert callers == {"realtime.events.publisher"}
