"""Debian's headless Chromium, driven from pytest: the DOM of a page after its scripts ran.

`--virtual-time-budget` lets the page's timers and fetches run (in virtual time) before the DOM
is printed, so what a script rendered is what is asserted. Without chromium the browser tests
skip, except in CI (`CI` set), where they fail: `scripts/bootstrap.sh` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    """The chromium executable; skips (fails in CI) when there is none."""
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed (Debian package `chromium`; scripts/bootstrap.sh)"
        if os.environ.get("CI"):
            pytest.fail(message + ": required in CI")
        pytest.skip(message + ": browser tests skipped")
    return found


def dump_dom(url: str, profile: Path, *, budget_ms: int = 4000, timeout: float = 90) -> str:
    """The serialized DOM of `url` once `budget_ms` of virtual time ran; `profile` is the
    browser's (throwaway) user data directory."""
    return _run(url, profile, ["--dump-dom"], budget_ms, timeout).stdout


def screenshot(url: str, profile: Path, path: Path, *, budget_ms: int = 4000) -> Path:
    """A PNG of the page (a test artifact, for people)."""
    _run(url, profile, [f"--screenshot={path}", "--window-size=1400,1100"], budget_ms, 90)
    return path


def _run(url: str, profile: Path, extra: list[str], budget_ms: int,
         timeout: float) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", *extra, url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               check=False)
    assert completed.returncode == 0, (
        f"chromium failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed
