"""Running engines in tests: the fake vLLM (a real process) and the real vLLM CPU build."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from loader.engine.kinds import VllmEngine
from support.vectors import PROJECT_ROOT

FAKE_VLLM = Path(__file__).resolve().with_name("fake_vllm.py")


def free_port() -> int:
    """A loopback port that was free a moment ago (the engine binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def fake_vllm_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable that is the fake vLLM, run by this test run's Python.

    fake_vllm.py itself starts with `#!/usr/bin/env python3`, which may be a wrapper (pyenv
    shims fork helpers into the engine's process group); `exec` keeps the engine's pid.
    """
    wrapper = tmp_path_factory.mktemp("fake-engine") / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def fake_engine(vllm_bin: Path, port: int | None = None, **faults: object) -> VllmEngine:
    """The fake vLLM as an engine kind; `faults` become FAKE_VLLM_<NAME> variables
    (e.g. start_delay=0.5 -> FAKE_VLLM_START_DELAY=0.5; see fake_vllm.py)."""
    env = {f"FAKE_VLLM_{name.upper()}": str(value) for name, value in faults.items()}
    return VllmEngine(vllm_bin, port or free_port(), env=env)


def real_vllm_bin() -> Path:
    """The vLLM CPU build's executable; skips (or fails when the tier is required) without it."""
    venv = Path(os.environ.get("APPLIANCE_ENGINE_VENV", PROJECT_ROOT / ".engine-venv"))
    vllm = venv / "bin" / "vllm"
    if not vllm.is_file():
        message = f"vLLM CPU build not found at {vllm} (scripts/engine.sh installs it)"
        if os.environ.get("APPLIANCE_REQUIRE_ENGINE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return vllm
