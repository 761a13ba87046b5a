"""Engine kinds: how to start an OpenAI-compatible inference server on a verified model.

The loader only needs a command line, an environment, a loopback port and a health path; an
`EngineKind` supplies them. The command line takes the model's own arguments, pinned by its
trusted record, after the deployment's (loader.engine.arguments: a flag set on both sides is
refused). `VllmEngine` is the one in use: vLLM on GPUs in production
(`VllmEngine.production`), vLLM's CPU build in development and CI (`VllmEngine.cpu_development`).
The engine always binds 127.0.0.1: only the appliance's proxy talks to it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from loader.engine.arguments import refuse_conflicts
from loader.errors import EngineStartError

ENGINE_HOST = "127.0.0.1"

# Passed from the supervisor's environment to the engine; nothing else is (no tokens, no venv).
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")

# A TD has no business reaching the model hub or sending usage statistics.
VLLM_OFFLINE_ENV = MappingProxyType({
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
})

# vLLM's CPU build on a small machine (docs/engine.md §2): eager mode and the in-process
# executor start in ~20 s instead of ~80 s and decode no slower; the KV cache is in GiB.
VLLM_CPU_DEVELOPMENT_ARGS = ("--enforce-eager", "--distributed-executor-backend", "uni")
VLLM_CPU_DEVELOPMENT_ENV = MappingProxyType({
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
})

# Set by the loader from the load request; an override could move the engine off loopback.
RESERVED_ARGS = ("--host", "--port", "--served-model-name")


class EngineKind(Protocol):
    """What differs between inference engines."""

    @property
    def port(self) -> int: ...

    @property
    def health_path(self) -> str: ...

    def command(
        self, model_path: Path, served_model_name: str, model_args: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        """The engine's argv; `model_args` are the model's own (EngineStartError on a clash)."""
        ...

    def environment(self) -> Mapping[str, str]:
        """Variables for the engine, on top of PASSTHROUGH_ENV."""
        ...


@dataclass(frozen=True)
class VllmEngine:
    """`vllm serve MODEL --host 127.0.0.1 --port PORT --served-model-name NAME [extra_args]
    [model_args]`: `extra_args` for every model (the operator's), `model_args` per model."""

    vllm_bin: Path  # the `vllm` executable of the engine's own venv
    port: int = 8001
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    health_path: str = "/health"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"engine port must be in 1..65535, got {self.port}")
        for arg in self.extra_args:
            if arg.split("=", 1)[0] in RESERVED_ARGS:
                raise ValueError(f"extra engine argument {arg!r} is set by the loader itself")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @classmethod
    def production(
        cls, vllm_bin: Path, *, port: int = 8001, extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> VllmEngine:
        """vLLM with its defaults (GPU), offline."""
        return cls(vllm_bin, port, extra_args, {**VLLM_OFFLINE_ENV, **(env or {})})

    @classmethod
    def cpu_development(
        cls, vllm_bin: Path, *, port: int = 8001, extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> VllmEngine:
        """vLLM's CPU build, tuned for fast start on a small machine (development and CI)."""
        return cls(
            vllm_bin, port, VLLM_CPU_DEVELOPMENT_ARGS + extra_args,
            {**VLLM_OFFLINE_ENV, **VLLM_CPU_DEVELOPMENT_ENV, **(env or {})},
        )

    def command(
        self, model_path: Path, served_model_name: str, model_args: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        fixed = (
            str(self.vllm_bin), "serve", str(model_path),
            "--host", ENGINE_HOST, "--port", str(self.port),
            "--served-model-name", served_model_name,
            *self.extra_args,
        )
        refuse_conflicts(model_args, fixed)
        return (*fixed, *model_args)

    def environment(self) -> Mapping[str, str]:
        return self.env


def engine_environment(kind: EngineKind, parent: Mapping[str, str]) -> dict[str, str]:
    """The engine's whole environment: a few variables of the parent, then the kind's own."""
    passed = {name: parent[name] for name in PASSTHROUGH_ENV if name in parent}
    return passed | dict(kind.environment())


def require_free_port(port: int) -> None:
    """Refuse to start when something already listens on the engine port.

    Otherwise the health check could be answered by that other process (a leftover engine, or
    anything else) and an unverified server would be reported ready.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option as uvicorn, so a port in TIME_WAIT after a stop counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ENGINE_HOST, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise EngineStartError(
                f"engine port {ENGINE_HOST}:{port} is already in use", check="engine port free",
            ) from error
