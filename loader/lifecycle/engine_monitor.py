"""Watching a ready engine: process exit and failing health are reported, once.

What happens next (restart with backoff, or giving up) is the lifecycle's decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from loader.engine.health import engine_exited
from loader.errors import EngineError, EngineUnhealthyError
from loader.lifecycle.steps import RunningEngine
from loader.settings import HealthSettings


class EngineMonitor:
    """Checks a ready engine every `check_interval` seconds on a thread of its own.

    The engine has failed when its leader process exited, or when `failure_threshold` health
    probes in a row failed while it ran. `on_failure` is then called once, on the monitor's
    thread, and the monitor ends. `stop` ends it without a report.
    """

    def __init__(
        self,
        engine: RunningEngine,
        settings: HealthSettings,
        on_failure: Callable[[EngineError], None],
        *,
        name: str,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._on_failure = on_failure
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        failure = self._watch()
        if failure is not None and not self._stopped.is_set():
            self._on_failure(failure)

    def _watch(self) -> EngineError | None:
        settings, engine = self._settings, self._engine
        failed_probes = 0
        while not self._stopped.wait(settings.check_interval):
            returncode = engine.returncode()
            if returncode is not None:
                return engine_exited(returncode, engine.log_tail())
            if engine.healthy():
                failed_probes = 0
                continue
            failed_probes += 1
            if failed_probes >= settings.failure_threshold:
                return EngineUnhealthyError(
                    f"engine failed {failed_probes} health checks in a row",
                    check="engine health", log_tail=engine.log_tail(),
                )
        return None
