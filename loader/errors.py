"""Errors of the `loader` package, one class per cause.

Every refusal says which check failed and, where there is one, the expected and the actual value:

    LoaderError
    ├── ExpectedDigestMismatchError  the digest a load request names is not the record's
    ├── LifecycleError
    │   ├── LifecycleConflictError   another load or unload is running (HTTP 409)
    │   ├── ModelNotLoadedError      an unload names a model that is not the loaded one
    │   ├── OperationCancelledError  the lifecycle closed while the operation ran
    │   └── LifecycleClosedError     a request after close()
    ├── EngineError
    │   ├── EngineStartError         the engine could not be started (executable, port)
    │   ├── EngineExitedError        the engine exited, before health or after ready
    │   ├── EngineHealthTimeoutError the engine did not answer its health check in time
    │   ├── EngineUnhealthyError     a ready engine failed its health checks
    │   └── EngineStopError          the engine's process group survived SIGKILL
    └── StateStoreError              the last-load record is unreadable or malformed
"""

from __future__ import annotations

from typing import Any


class LoaderError(Exception):
    """Base class of every error raised by `loader`."""

    def __init__(
        self,
        message: str,
        *,
        check: str | None = None,
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        self.check = check
        self.expected = expected
        self.actual = actual
        detail = message
        if expected is not None or actual is not None:
            detail = f"{message} (expected {_show(expected)}, actual {_show(actual)})"
        super().__init__(detail)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape for logs and API errors: type, message and, when known, the check."""
        out: dict[str, Any] = {"type": type(self).__name__, "message": str(self)}
        if self.check is not None:
            out["check"] = self.check
        if self.expected is not None:
            out["expected"] = _show(self.expected)
        if self.actual is not None:
            out["actual"] = _show(self.actual)
        return out


class ExpectedDigestMismatchError(LoaderError):
    """The load request names an expected digest that differs from the trusted record's."""


class LifecycleError(LoaderError):
    """A lifecycle request that cannot be carried out in the current state."""


class LifecycleConflictError(LifecycleError):
    """A load or unload is already running: one operation at a time, no queue."""


class ModelNotLoadedError(LifecycleError):
    """An unload names a model other than the one loaded."""


class OperationCancelledError(LifecycleError):
    """The lifecycle was closed while the operation ran; what it had started was undone."""


class LifecycleClosedError(LifecycleError):
    """A request after the lifecycle was closed."""


class EngineError(LoaderError):
    """The inference engine process failed."""

    def __init__(self, message: str, *, log_tail: tuple[str, ...] = (), **kwargs: Any) -> None:
        self.log_tail = log_tail
        super().__init__(message, **kwargs)


class EngineStartError(EngineError):
    """The engine could not be started: a missing executable, or its port already in use."""


class EngineExitedError(EngineError):
    """The engine process exited, before it was healthy or after it was ready."""

    def __init__(self, message: str, *, returncode: int, **kwargs: Any) -> None:
        self.returncode = returncode
        super().__init__(message, **kwargs)


class EngineHealthTimeoutError(EngineError):
    """The engine did not answer its health endpoint before the start-up timeout."""


class EngineUnhealthyError(EngineError):
    """A ready engine failed several health checks in a row while its process still ran."""


class EngineStopError(EngineError):
    """Processes of the engine's group were still alive after SIGKILL."""


class StateStoreError(LoaderError):
    """The record of the last successful load is unreadable or malformed."""


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)
