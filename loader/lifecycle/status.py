"""The lifecycle's state machine and its status snapshot. No I/O; safe to use from any thread.

    idle ──load──▶ loading ──▶ ready ──unload──▶ unloading ──▶ idle
      ▲               │          │  ╲                             │
      │               ▼          │   ╲──load (replace)──▶ loading │
      └──unload──── error ◀──────┘ (engine failed)                │
                      ╰──restart──▶ loading ──▶ ready             ▼
                                                         (any step may fail ──▶ error)

Exactly one load or unload runs at a time: `begin` refuses while the state is loading or
unloading (LifecycleConflictError), it does not queue. Every `begin` takes a new generation, and
each later report names the ticket it got; a report from an older generation is ignored, so an
operation that was superseded (a restart scheduled before an unload, a late crash report of an
engine already replaced) cannot overwrite the newer state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from loader.errors import LifecycleConflictError

logger = logging.getLogger(__name__)


class ModelState(StrEnum):
    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    ERROR = "error"


class Operation(StrEnum):
    LOAD = "load"  # requested by the fleet manager
    RESTORE = "restore"  # the last successful load, at start
    RESTART = "restart"  # by the supervisor, after the engine failed
    UNLOAD = "unload"


BUSY_STATES = frozenset({ModelState.LOADING, ModelState.UNLOADING})
_STARTS_FROM = {
    Operation.LOAD: frozenset({ModelState.IDLE, ModelState.READY, ModelState.ERROR}),
    Operation.RESTORE: frozenset({ModelState.IDLE}),
    Operation.UNLOAD: frozenset({ModelState.IDLE, ModelState.READY, ModelState.ERROR}),
}


@dataclass(frozen=True)
class Ticket:
    """The right to report on one operation, valid while no newer operation has begun."""

    generation: int
    operation: Operation
    model: str | None


@dataclass(frozen=True)
class StatusSnapshot:
    """The lifecycle at one instant.

    `loaded_model` and `loaded_model_digest` are set only while a verified engine serves (ready)
    or is being stopped (unloading). `error` and `error_type` describe the last failure; a new
    load or unload clears them, a restart does not. `elapsed` counts seconds since the current or
    last operation started (a load that took 29 s reads 29 s when it is ready); `in_state` counts
    seconds since the current state was entered; `timings` lists the steps of the current or last
    operation in seconds.
    """

    state: ModelState
    loaded_model: str | None
    loaded_model_digest: str | None
    message: str
    progress: float
    elapsed: float
    in_state: float
    error: str | None
    error_type: str | None
    engine_log_tail: tuple[str, ...]
    generation: int
    operation: Operation | None
    target_model: str | None
    restarts: int
    timings: tuple[tuple[str, float], ...]

    @property
    def busy(self) -> bool:
        return self.state in BUSY_STATES

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (enums as strings, tuples as lists)."""
        return {
            "state": str(self.state),
            "loaded_model": self.loaded_model,
            "loaded_model_digest": self.loaded_model_digest,
            "message": self.message,
            "progress": self.progress,
            "elapsed": self.elapsed,
            "in_state": self.in_state,
            "error": self.error,
            "error_type": self.error_type,
            "engine_log_tail": list(self.engine_log_tail),
            "generation": self.generation,
            "operation": None if self.operation is None else str(self.operation),
            "target_model": self.target_model,
            "restarts": self.restarts,
            "timings": dict(self.timings),
        }


@dataclass(frozen=True)
class _Record:
    """The machine's state apart from the clock-dependent and live parts of a snapshot."""

    state: ModelState = ModelState.IDLE
    loaded_model: str | None = None
    loaded_model_digest: str | None = None
    message: str = "no model loaded"
    progress: float = 0.0
    entered: float = 0.0
    started: float = 0.0  # when the current or last operation began
    error: str | None = None
    error_type: str | None = None
    generation: int = 0
    operation: Operation | None = None
    target_model: str | None = None
    restarts: int = 0
    timings: tuple[tuple[str, float], ...] = ()


LogSource = Callable[[], tuple[str, ...]]


class StatusMachine:
    """Transitions of the lifecycle, guarded by generation. Every method returns at once.

    `on_change(snapshot)` is called after every change of state (and every `note`), in order,
    with the machine's lock held: it must not block (a status pusher enqueues) and must not start
    an operation. Progress reports do not call it.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        on_change: Callable[[StatusSnapshot], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.RLock()
        now = clock()
        self._record = _Record(entered=now, started=now)
        self._log_source: LogSource | None = None

    # -- reading --

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            record, source = self._record, self._log_source
            now = self._clock()
            return StatusSnapshot(
                state=record.state,
                loaded_model=record.loaded_model,
                loaded_model_digest=record.loaded_model_digest,
                message=record.message,
                progress=record.progress,
                elapsed=max(0.0, now - record.started),
                in_state=max(0.0, now - record.entered),
                error=record.error,
                error_type=record.error_type,
                engine_log_tail=source() if source is not None else (),
                generation=record.generation,
                operation=record.operation,
                target_model=record.target_model,
                restarts=record.restarts,
                timings=record.timings,
            )

    def is_current(self, ticket: Ticket) -> bool:
        with self._lock:
            return True

    # -- starting operations --

    def begin(self, operation: Operation, model: str | None, message: str) -> Ticket:
        """Start a load, restore or unload; raises LifecycleConflictError while one runs."""
        with self._lock:
            self.require_can_begin(operation, model)
            record = self._record
            unloading = operation is Operation.UNLOAD
            self._log_source = None
            return self._start(replace(
                record,
                state=ModelState.UNLOADING if unloading else ModelState.LOADING,
                loaded_model=record.loaded_model if unloading else None,
                loaded_model_digest=record.loaded_model_digest if unloading else None,
                error=None, error_type=None, restarts=0,
            ), operation, model, message)

    def require_can_begin(self, operation: Operation, model: str | None) -> None:
        """Raise LifecycleConflictError if `begin(operation, ...)` would; change nothing."""
        with self._lock:
            record = self._record
            if record.state in BUSY_STATES:
                raise LifecycleConflictError(
                    f"cannot {operation} {model or 'the model'}: a {record.operation} of "
                    f"{record.target_model} is in progress",
                    check="one operation at a time", expected="idle, ready or error",
                    actual=str(record.state),
                )
            if record.state not in _STARTS_FROM[operation]:
                raise LifecycleConflictError(
                    f"cannot {operation} {model or 'the model'} in state {record.state}",
                    check=f"{operation} allowed",
                    expected=" or ".join(sorted(_STARTS_FROM[operation])),
                    actual=str(record.state),
                )

    def begin_restart(self, after: Ticket, attempt: int, message: str) -> Ticket | None:
        """Start restart `attempt` if nothing happened since `after` failed; None if superseded."""
        with self._lock:
            record = self._record
            if record.generation != after.generation or record.state is not ModelState.ERROR:
                return None
            return self._start(
                replace(record, state=ModelState.LOADING, restarts=attempt),
                Operation.RESTART, after.model, message,
            )

    def _start(
        self, record: _Record, operation: Operation, model: str | None, message: str
    ) -> Ticket:
        ticket = Ticket(record.generation + 1, operation, model)
        now = self._clock()
        self._set(replace(
            record, generation=ticket.generation, operation=operation, target_model=model,
            message=message, progress=0.0, entered=now, started=now, timings=(),
        ))
        return ticket

    # -- reports from a running operation (ignored once superseded) --

    def report(self, ticket: Ticket, progress: float, message: str) -> bool:
        """Progress of a loading or unloading operation; never moves backwards."""
        with self._lock:
            record = self._record
            if not self._owns(ticket) or record.state not in BUSY_STATES:
                return False
            progress = min(1.0, max(record.progress, progress))
            self._record = replace(record, progress=progress, message=message)
            return True

    def note(self, ticket: Ticket, message: str) -> bool:
        """A new message for the current state, e.g. a pending restart's countdown."""
        with self._lock:
            if not self._owns(ticket):
                return False
            self._set(replace(self._record, message=message))
            return True

    def attach_log(self, ticket: Ticket, source: LogSource) -> bool:
        """Where the engine's output tail is read from, for this operation's engine."""
        with self._lock:
            if not self._owns(ticket):
                return False
            self._log_source = source
            return True

    def record_timing(self, ticket: Ticket, step: str, seconds: float) -> bool:
        with self._lock:
            if not self._owns(ticket):
                return False
            record = self._record
            self._record = replace(record, timings=(*record.timings, (step, seconds)))
            return True

    # -- outcomes --

    def ready(self, ticket: Ticket, model: str, digest: str, message: str) -> bool:
        with self._lock:
            if not self._owns(ticket) or self._record.state is not ModelState.LOADING:
                return False
            self._set(replace(
                self._record, state=ModelState.READY, loaded_model=model,
                loaded_model_digest=digest, message=message, progress=1.0, entered=self._clock(),
            ))
            return True

    def idle(self, ticket: Ticket, message: str) -> bool:
        with self._lock:
            if not self._owns(ticket) or self._record.state is not ModelState.UNLOADING:
                return False
            self._set(replace(
                self._record, state=ModelState.IDLE, loaded_model=None, loaded_model_digest=None,
                message=message, progress=0.0, entered=self._clock(),
            ))
            return True

    def fail(self, ticket: Ticket, error: BaseException, message: str | None = None) -> bool:
        """Any state to error, keeping the last progress figure."""
        with self._lock:
            if not self._owns(ticket):
                return False
            self._set(replace(
                self._record, state=ModelState.ERROR, loaded_model=None,
                loaded_model_digest=None, message=message or f"{ticket.operation} failed",
                error=str(error), error_type=type(error).__name__, entered=self._clock(),
            ))
            return True

    def _owns(self, ticket: Ticket) -> bool:
        return ticket.generation == self._record.generation

    def _set(self, record: _Record) -> None:
        self._record = record
        if self._on_change is None:
            return
        try:
            self._on_change(self.snapshot())
        except Exception:  # a status listener must never break the lifecycle
            logger.exception("status listener failed")
