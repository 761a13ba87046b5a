"""The import direction of docs/design.md, checked on every module's imports.

Between packages: checks <- attest <- ratls <- appliance; checks <- loader <- appliance; nothing
imports appliance, and `checks` (the error base) imports nothing of the project.
Inside `appliance`, one package per process: the supervisor never imports the API worker's code
(nor the worker the supervisor's); both talk only through `appliance.channel`. The fleet console
imports neither: it shares only the status push's wire contract (`appliance.status_push`).
Inside `loader`, model images, the engine and the activator are apart, and the lifecycle sits on
top of them.

Inside `attest`, the verification stack and the RTMR event-log replay are pure: the kernel, library
and network I/O sits in `attest/providers/`, `attest/pcs.py` and `attest/http_get.py`.

Parses every module's imports (including function-local ones) so that a wrong import fails here
even when no test exercises the code path that makes it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("checks", "attest", "ratls", "loader", "appliance")
ALLOWED = {
    "checks": set(),
    "attest": {"checks"},
    "ratls": {"checks", "attest"},
    "loader": {"checks"},
    "appliance": {"checks", "attest", "ratls", "loader"},
}

# Inside a package: the unit a module belongs to (its sub-package, or "<package>.<module>" for a
# top-level module) -> the units of the same package it may import. A unit may import itself.
APPLIANCE_SHARED = {"appliance.errors", "appliance.settings", "appliance.logs", "appliance.metrics",
                    "appliance.status_push", "appliance.environment"}
LOADER_SHARED = {"loader.errors", "loader.settings"}
UNIT_ALLOWED = {
    **dict.fromkeys(APPLIANCE_SHARED, APPLIANCE_SHARED),
    "appliance.channel": APPLIANCE_SHARED,
    "appliance.supervisor": APPLIANCE_SHARED | {"appliance.channel"},
    "appliance.worker": APPLIANCE_SHARED | {"appliance.channel"},
    "appliance.portal": APPLIANCE_SHARED,
    # The fleet console receives what the supervisor pushes: it shares the wire contract
    # (appliance.status_push), never the supervisor's or the worker's code.
    # ... and serves the developer portal through the portal's own procedure.
    "appliance.console": APPLIANCE_SHARED | {"appliance.portal"},
    "appliance.cli": None,  # the command line wires every process: anything
    "appliance.__main__": {"appliance.cli"},
    "appliance.__init__": set(),
    **dict.fromkeys(LOADER_SHARED, LOADER_SHARED),
    "loader.__init__": set(),
    "loader.verity": {"loader.errors"},
    "loader.images": LOADER_SHARED | {"loader.verity"},
    "loader.engine": LOADER_SHARED,
    "loader.activator": LOADER_SHARED | {"loader.verity", "loader.images"},
    "loader.lifecycle": LOADER_SHARED | {"loader.verity", "loader.images", "loader.engine"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name that `path` imports (`from a.b import c` gives a.b and a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)} & set(PACKAGES)


def unit_of(module: str) -> str:
    """`appliance.worker.proxy` -> `appliance.worker`; `loader.errors` -> `loader.errors`."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_allowed_siblings(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    violations = []
    for path in files:
        for imported in imported_packages(path) - ALLOWED[package] - {package}:
            violations.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not violations, "imports against docs/design.md's direction:\n" + "\n".join(violations)


@pytest.mark.parametrize("package", ["appliance", "loader"])
def test_units_inside_a_package_import_only_what_they_may(package: str) -> None:
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        unit = unit_of(module_name(path))
        assert unit in UNIT_ALLOWED, f"{path.relative_to(ROOT)}: unit {unit} has no import rule"
        allowed = UNIT_ALLOWED[unit]
        if allowed is None:
            continue
        for imported in imported_modules(path):
            if imported.split(".")[0] != package or imported == package:
                continue
            target = unit_of(imported)
            # `from loader import errors` names the sub-module: judge by it, not the package.
            if target not in allowed | {unit}:
                violations.append(f"{path.relative_to(ROOT)} ({unit}) imports {imported}")
    assert not violations, "imports across process or role lines:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("appliance.supervisor.service", ("flask", "uvicorn", "appliance.worker", "httptools")),
        ("appliance.worker.server", ("appliance.supervisor", "loader.lifecycle")),
        ("appliance.console.wiring", ("appliance.supervisor", "appliance.worker",
                                      "appliance.channel", "loader", "uvicorn")),
    ],
)
def test_a_process_loads_only_its_own_code(module: str, forbidden: tuple[str, ...]) -> None:
    probe = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}"
        f" or any(m == f or m.startswith(f + '.') for f in {forbidden!r}))\n"
        "print('\\n'.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == [], f"{module} loads {out.stdout.split()}"


# Parse, verify and replay: no device, file-descriptor, library or network I/O in these.
PURE_ATTEST_MODULES = (
    "attest.rtmr",
    "attest.quote",
    "attest.pck",
    "attest.strict_json",
    "attest.collateral_documents",
    "attest.collateral",
    "attest.signatures",
    "attest.validity",
    "attest.chains",
    "attest.tcb",
    "attest.verify",
)
IO_MODULES = ("os", "fcntl", "ctypes", "socket", "ssl", "subprocess", "httpx", "requests",
              "attest.providers", "attest.pcs", "attest.http_get")


@pytest.mark.parametrize("module", PURE_ATTEST_MODULES)
def test_pure_attest_modules_import_no_io(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    io = sorted(name for name in imported_modules(path)
                if any(name == m or name.startswith(m + ".") for m in IO_MODULES))
    assert not io, f"{module} is meant to be pure but imports {io}"


def test_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from appliance.cli import main\n    import ratls.x\n")
    assert imported_packages(bad) == {"appliance", "ratls"}
    assert imported_modules(bad) == {"appliance.cli", "appliance.cli.main", "ratls.x"}


def test_units_are_the_first_two_components() -> None:
    assert unit_of("appliance.worker.proxy") == "appliance.worker"
    assert unit_of("loader.errors") == "loader.errors"
    assert unit_of("appliance.supervisor") == "appliance.supervisor"
