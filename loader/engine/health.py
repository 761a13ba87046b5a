"""The engine's health endpoint: one probe, and the wait for a starting engine to answer."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable

from loader.engine.kinds import ENGINE_HOST
from loader.engine.process_group import EngineProcess, failure_cause
from loader.errors import EngineExitedError, EngineHealthTimeoutError, OperationCancelledError
from loader.settings import HealthSettings

_OUTPUT_DRAIN_SECONDS = 2.0


def probe_health(port: int, path: str, timeout: float) -> bool:
    """True if GET http://127.0.0.1:port/path answers 200 within `timeout` seconds."""
    connection = http.client.HTTPConnection(ENGINE_HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def engine_exited(
    returncode: int, log_tail: tuple[str, ...], when: str = "", *, cause: str | None = None
) -> EngineExitedError:
    """The error for an engine that exited. `cause` is shown to anyone who reads the status:
    only ever a line of start-up output (once serving, the engine may print prompts)."""
    return EngineExitedError(
        f"engine exited{when} with status {returncode}" + (f": {cause}" if cause else ""),
        check="engine running", returncode=returncode, log_tail=log_tail,
    )


def wait_until_healthy(
    process: EngineProcess,
    port: int,
    path: str,
    settings: HealthSettings,
    *,
    clock: Callable[[], float],
    cancelled: threading.Event,
    on_wait: Callable[[float], None],
) -> None:
    """Poll the health endpoint until it answers 200, the process exits, or the timeout passes.

    `on_wait(seconds_waited)` is called before each probe, for progress. Raises
    EngineExitedError, EngineHealthTimeoutError or OperationCancelledError; the caller stops
    the process group.
    """
    started = clock()
    while True:
        waited = clock() - started
        returncode = process.returncode()
        if returncode is not None:
            process.drain_output(_OUTPUT_DRAIN_SECONDS)  # the cause is often in the last lines
            tail = process.log_tail()  # all of it start-up output: it never served
            raise engine_exited(
                returncode, tail, " before it was healthy", cause=failure_cause(tail)
            )
        if waited >= settings.startup_timeout:
            raise EngineHealthTimeoutError(
                f"engine not healthy after {waited:.1f} s",
                check="engine health", expected=f"200 from {path} within "
                f"{settings.startup_timeout:g} s", actual="no answer", log_tail=process.log_tail(),
            )
        on_wait(waited)
        if probe_health(port, path, settings.probe_timeout):
            return
        if cancelled.wait(settings.poll_interval):
            raise OperationCancelledError("cancelled while waiting for the engine's health")
