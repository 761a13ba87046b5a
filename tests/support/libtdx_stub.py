"""Build the libtdx_attest stand-in (libtdx_attest_stub.c) with gcc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("libtdx_attest_stub.c")


def build_stub_library(directory: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the libtdx_attest stub (scripts/bootstrap.sh)")
    out = directory / "libtdx_attest_stub.so"
    flags = ["-shared", "-fPIC", "-O1", "-Wall", "-Werror"]
    subprocess.run([gcc, *flags, "-o", str(out), str(SOURCE)], check=True)
    return out
