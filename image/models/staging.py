"""Build a model directory aside and rename it into place, so that a half-built model is never
found at its final path (scripts/models.sh treats an existing directory as a finished build)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_into(out: Path, build: Callable[[Path], None]) -> None:
    """Run `build(directory)` on a fresh directory next to `out`, then make it `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(staging)
        for path in staging.iterdir():  # save_pretrained leaves some files 0600
            path.chmod(0o644)
        staging.chmod(0o755)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
