"""Start an engine on a verified model and wait until it is healthy; stop it without leftovers.

The engine's command line is built here from the model's path, its served name and the engine
settings its trusted record pins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from loader.engine.health import probe_health, wait_until_healthy
from loader.engine.kinds import EngineKind, engine_environment, require_free_port
from loader.engine.process_group import EngineProcess
from loader.images.engine_settings import NO_ENGINE_SETTINGS, ModelEngineSettings
from loader.lifecycle.steps import OperationContext
from loader.settings import LoaderSettings

# Shares of the start step's progress: spawning is instant, the health wait is everything else.
_SPAWNED = 0.05
_HEALTH_SHARE = 0.9


class LaunchedEngine:
    """A started engine: its process group, how to probe it, how to stop it."""

    def __init__(self, process: EngineProcess, kind: EngineKind, settings: LoaderSettings) -> None:
        self.process = process
        self._kind = kind
        self._settings = settings

    def returncode(self) -> int | None:
        return self.process.returncode()

    def healthy(self) -> bool:
        health = self._settings.health
        return probe_health(self._kind.port, self._kind.health_path, health.probe_timeout)

    def log_tail(self) -> tuple[str, ...]:
        return self.process.log_tail()

    def stop(self) -> int | None:
        return self.process.stop(self._settings.stop_grace, self._settings.kill_timeout)


class EngineLauncher:
    """The EngineStarter for an EngineKind (vLLM, or the fake engine in tests)."""

    def __init__(
        self,
        kind: EngineKind,
        settings: LoaderSettings,
        *,
        parent_environment: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self._settings = settings
        self._parent_environment = parent_environment

    def start(
        self, model_path: Path, served_model_name: str, context: OperationContext,
        engine_settings: ModelEngineSettings = NO_ENGINE_SETTINGS,
    ) -> LaunchedEngine:
        kind, settings = self.kind, self._settings
        # 1. The command line, with the record's settings; a flag the deployment sets too is
        #    refused here, before anything runs.
        command = kind.command(model_path, served_model_name, engine_settings.vllm_args())
        # 2. Nothing may already answer on the engine port: it would pass the health check.
        require_free_port(kind.port)
        context.report(0.0, "starting engine")
        # 3. Spawn in a new process group, with a clean environment.
        parent = os.environ if self._parent_environment is None else self._parent_environment
        with context.step("engine_start"):
            process = EngineProcess.spawn(
                command,
                engine_environment(kind, parent),
                tail_lines=settings.log_tail_lines,
                user=settings.engine_user,
            )
        engine = LaunchedEngine(process, kind, settings)
        context.attach_log(process.log_tail)
        expected = settings.health.expected_startup

        def on_wait(waited: float) -> None:
            share = _HEALTH_SHARE * (1 - math.exp(-waited / expected))
            context.report(_SPAWNED + share, f"waiting for health ({waited:.0f} s)")

        # 4. Wait for health; whatever goes wrong, the whole group goes.
        try:
            context.report(_SPAWNED, "engine started, waiting for health")
            with context.step("health_wait"):
                wait_until_healthy(
                    process, kind.port, kind.health_path, settings.health,
                    clock=context.clock, cancelled=context.cancelled, on_wait=on_wait,
                )
        except BaseException:
            engine.stop()
            raise
        process.serving()
        return engine
