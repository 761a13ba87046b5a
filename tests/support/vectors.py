"""Where the real test vectors live: tests/vectors, copied byte for byte
(tests/vectors/PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VECTORS = PROJECT_ROOT / "tests" / "vectors"
