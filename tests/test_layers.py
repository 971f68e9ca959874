"""Arrows between the project's layers point down: configuration imports no realtime module,
and the domain (runs/) imports of the project package (quikday/) only its leaf modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What any app may import of quikday/: modules that import no app themselves.
QUIKDAY_LEAVES = {"server.upstream", "quikday.env"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return found


def test_the_settings_import_no_realtime_module():
    imported = imported_modules(ROOT / "quikday" / "settings.py")
    assert not {name for name in imported if name.split(".")[0] == "realtime"}


def test_the_domain_imports_only_the_project_packages_leaf_modules():
    reaches = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "runs").rglob("*.py")
        for name in imported_modules(path)
        if name.startswith("quikday.") and not any(name.startswith(leaf) for leaf in QUIKDAY_LEAVES)
    }
    assert not reaches, sorted(reaches)
