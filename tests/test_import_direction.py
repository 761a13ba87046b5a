"""The import direction of DESIGN.md: attest <- ratls <- appliance; loader <- appliance.

Parses every module's imports (including function-local ones) so that a wrong import fails here
even when no test exercises the code path that makes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("attest", "ratls", "loader", "appliance")
ALLOWED = {
    "attest": set(),
    "ratls": {"attest"},
    "loader": set(),
    "appliance": {"attest", "ratls", "loader"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_allowed_siblings(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    violations = []
    for path in files:
        for imported in imported_packages(path) - ALLOWED[package] - {package}:
            violations.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not violations, "imports against DESIGN.md's direction:\n" + "\n".join(violations)


def test_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from appliance.cli import main\n    import ratls.x\n")
    assert imported_packages(bad) == {"appliance", "ratls"}
