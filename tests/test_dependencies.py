"""The dependency rule between packages, checked on the source with the AST.

contracts imports nothing of the project; firmware_bridge only contracts; edge only
contracts and firmware_bridge; gateway only contracts; cloud_api only contracts and
gateway. postedge (the command line and the demo) may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"contracts", "firmware_bridge", "edge", "gateway", "cloud_api", "postedge"}
ALLOWED = {
    "contracts": set(),
    "firmware_bridge": {"contracts"},
    "edge": {"contracts", "firmware_bridge"},
    "gateway": {"contracts"},
    "cloud_api": {"contracts", "gateway"},
    "postedge": PROJECT - {"postedge"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no source files"
    violations = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in files
    }
    assert {path: bad for path, bad in violations.items() if bad} == {}


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    """Guard against a checker that finds nothing: it must see both import forms."""
    source = tmp_path / "x.py"
    source.write_text("import gateway.config\nfrom edge import agent\nfrom . import sibling\n")
    assert imported_packages(source) == {"gateway", "edge"}
