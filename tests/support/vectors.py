"""Where the real test vectors live (../shared/vectors, never copied into this repository)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("APPLIANCE_VECTORS", PROJECT_ROOT.parent / "shared" / "vectors"))
