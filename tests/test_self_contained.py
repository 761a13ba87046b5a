"""The repository stands on its own: no tracked file refers to a path outside it.

A person who clones the repository has only the clone, so a comment, a document or a script that
points at a folder beside the checkout, at an absolute path of a developer's machine, or at a
relative path that climbs out of the repository is a broken reference.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Paths that only ever existed beside a developer's checkout, never in a clone.
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(?:notes|vectors|hooks)\b|/work/|\.\./\.library")
# A Markdown link whose target is a relative path.
MARKDOWN_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    files = []
    for name in filter(None, names):
        path = ROOT / name
        # The vectors' provenance cites upstream repositories' own paths, not ours; this file
        # spells the patterns it looks for.
        if name.startswith("tests/vectors/") or path == Path(__file__) or not path.is_file():
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def outside_references(path: Path, text: str) -> list[str]:
    found = [f"{path.relative_to(ROOT)}:{n}: {m.group(0)}"
             for n, line in enumerate(text.splitlines(), 1) for m in OUTSIDE.finditer(line)]
    if path.suffix == ".md":
        for n, line in enumerate(text.splitlines(), 1):
            for m in MARKDOWN_LINK.finditer(line):
                target = (path.parent / m.group(1)).resolve()
                if not target.is_relative_to(ROOT) or not target.exists():
                    found.append(f"{path.relative_to(ROOT)}:{n}: link {m.group(1)}")
    return found


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = tracked_text_files()
    assert len(files) > 50, "git ls-files found too few files: is this a checkout?"
    found = [ref for path in files for ref in outside_references(path, path.read_text())]
    assert not found, "references outside the repository:\n" + "\n".join(found)


# Built, not written out, so that this file does not itself name a path outside the repository.
SIBLING = "../" + "shared/"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("README.md", "see " + SIBLING + "DESIGN.md"),
        ("loader/x.py", "# " + SIBLING + "notes/docs/engine.md §2"),
        ("tests/x.py", "VECTORS = Path('/work/" + "shared/vectors')"),
        ("docs/x.md", "[design](../../DESIGN.md)"),
        ("docs/x.md", "[missing](missing.md)"),
    ],
)
def test_checker_finds_an_outside_reference(name: str, text: str) -> None:
    assert outside_references(ROOT / name, text)


def test_checker_accepts_references_inside() -> None:
    text = "[tests](tests/conftest.py) and https://x/../y"
    assert outside_references(ROOT / "README.md", text) == []
