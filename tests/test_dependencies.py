"""One dependency policy: a buildpack's plain `pip install -r requirements.txt` gets what CI tested.

requirements.txt is generated from requirements.in by `make constraints`
(.ci/constraints.py) and pins every package production installs. CI installs
that file (then the tools with -c constraints.txt), so the versions the suite
runs against are the installed ones. These tests check that the two files
are what the generator writes from the installed packages, that
requirements.txt leaves pip nothing to choose, and — against the package
index, as a buildpack would — that its resolution is exactly those pins.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.processes import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("ci_constraints", ROOT / ".ci" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(path) -> dict[str, tuple[str, frozenset[str]]]:
    """canonical name → (pinned version, extras) of a pinned requirements or constraints file."""
    found = {}
    for requirement in _generator().read_requirements(path):
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"{path.name}: {requirement} is not a pin"
        )
        found[canonicalize_name(requirement.name)] = (specifiers[0].version, frozenset(requirement.extras))
    return found


def _versions(path) -> dict[str, str]:
    return {name: version for name, (version, _) in pins(path).items()}


def test_requirements_and_constraints_pin_the_installed_versions():
    """What CI installed (and the suite runs against) is what both files pin: nothing drifted."""
    generator = _generator()
    for path, wanted in (
        (ROOT / "requirements.txt", generator.requirements_txt()),
        (ROOT / "constraints.txt", generator.constraints_txt()),
    ):
        differ = {
            name: (version, metadata.version(name))
            for name, version in _versions(path).items()
            if metadata.version(name) != version
        }
        assert not differ, f"{path.name} pins ≠ installed (pinned, installed): {differ}; run make constraints"
        assert path.read_text() == wanted, f"{path.name} is not what `make constraints` writes; run it"


def test_production_pins_are_constraints_pins():
    production, everything = _versions(ROOT / "requirements.txt"), _versions(ROOT / "constraints.txt")
    assert {name: everything.get(name) for name in production} == production


def test_requirements_txt_leaves_pip_nothing_to_choose():
    """Every requirement of every pinned package (markers evaluated here: Linux, CPython 3.11) is
    itself pinned, at a version it accepts: pip's resolution of the file can only be the pins."""
    pinned = pins(ROOT / "requirements.txt")
    unpinned, refused = set(), {}
    for name, (_version, extras) in pinned.items():
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": e}) for e in extras or {""}
            ):
                continue
            needed = canonicalize_name(requirement.name)
            if needed not in pinned:
                unpinned.add(f"{needed} (for {name})")
            elif not requirement.specifier.contains(pinned[needed][0], prereleases=True):
                refused[needed] = f"{name} needs {requirement.specifier}, pinned {pinned[needed][0]}"
    assert not unpinned, f"requirements.txt lets pip choose: {sorted(unpinned)}"
    assert not refused, refused


def test_requirements_in_names_every_direct_dependency_requirements_txt_pins_with_extras():
    direct = {
        canonicalize_name(r.name): frozenset(r.extras)
        for r in _generator().read_requirements(ROOT / "requirements.in")
    }
    pinned = pins(ROOT / "requirements.txt")
    assert set(direct) <= set(pinned)
    assert {name: pinned[name][1] for name in direct} == direct


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_buildpacks_pip_install_resolves_to_the_versions_ci_ran(tmp_path):
    """`pip install -r requirements.txt` against the package index, as on a fresh machine
    (--ignore-installed: nothing of this venv counts), resolves to constraints.txt's versions."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), "-r", str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    tested = _versions(ROOT / "constraints.txt")
    assert {
        name: (version, tested.get(name)) for name, version in resolved.items() if tested.get(name) != version
    } == {}
    assert resolved == _versions(ROOT / "requirements.txt")
