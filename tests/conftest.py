"""Shared fixtures: where the real test vectors live, and the manifest that describes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.vectors import VECTORS

# Fixtures shared by several test packages (the fake engine: `fake_vllm_bin`).
pytest_plugins = ("support.engines",)



@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    if not (VECTORS / "MANIFEST.json").is_file():
        pytest.fail(f"test vectors not found at {VECTORS}")
    return VECTORS


@pytest.fixture(scope="session")
def manifest(vectors_dir: Path) -> dict:
    return json.loads((vectors_dir / "MANIFEST.json").read_text())
