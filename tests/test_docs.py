"""The documentation agrees with the tree: what README.md and docs/design.md name exists, and
every `docs/<name>.md §N` citation in a tracked file points at a section that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Paths of this project's own code as the docs write them: `appliance/worker/asgi.py`, `loader/`.
CODE_PATH = re.compile(r"`((?:checks|attest|ratls|loader|appliance|bench|scripts|image|tests)"
                       r"/[A-Za-z0-9_./-]*)`")
CITATION = re.compile(r"docs/([a-z-]+\.md) §(\d+)")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / name for name in out if not name.startswith("tests/vectors/")]


def code_paths(text: str) -> set[str]:
    return set(CODE_PATH.findall(text))


def section_numbers(doc: Path) -> set[str]:
    return set(re.findall(r"^#+ (\d+)\.", doc.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("doc", ["README.md", "docs/design.md"])
def test_named_code_paths_exist(doc: str) -> None:
    named = code_paths((ROOT / doc).read_text())
    assert named, f"{doc} names no code path: the pattern no longer matches"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_citations_name_existing_sections() -> None:
    broken = []
    cited = 0
    for path in tracked_files():
        if path.suffix not in {".py", ".md", ".sh", ".service", ".toml", ".conf"}:
            continue
        for doc, number in CITATION.findall(path.read_text(errors="replace")):
            cited += 1
            target = ROOT / "docs" / doc
            if not target.exists() or number not in section_numbers(target):
                broken.append(f"{path.relative_to(ROOT)}: docs/{doc} §{number}")
    assert cited, "no citation found: the pattern no longer matches"
    assert not broken, "citations of missing documents or sections:\n" + "\n".join(broken)


def test_the_checker_sees_a_missing_path() -> None:
    assert code_paths("see `loader/nowhere.py` and `appliance/`") == {"loader/nowhere.py",
                                                                       "appliance/"}
    assert not (ROOT / "loader/nowhere.py").exists()
