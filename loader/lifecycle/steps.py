"""The steps a lifecycle runs, as interfaces, and the context through which they report.

The lifecycle (`loader.lifecycle.operations`) orders the steps and owns the state; the steps do the
I/O:

    ModelSource.check   resolve the name, read the trusted record, compare the expected digest
                        (synchronous: a bad request is refused before anything changes)
    ModelSource.verify  verify the image; returns the verified model to serve
    EngineStarter.start spawn the engine on the verified model, with the engine settings its
                        trusted record pins, and wait for its health

`loader.lifecycle.model_source.VerifiedModels` and `loader.lifecycle.engine_starter.EngineLauncher`
are the real ones.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loader.errors import OperationCancelledError
from loader.images.engine_settings import NO_ENGINE_SETTINGS, ModelEngineSettings
from loader.images.record import TrustedRecord
from loader.lifecycle.status import LogSource, StatusMachine, Ticket

# Whole bytes: an odd number of digits is malformed, not a digest that fails to match (409).
_HEX_BYTES = re.compile(r"(?:[0-9a-f]{2})+")


@dataclass(frozen=True)
class LoadRequest:
    """A request to serve `model`; with `expected_digest`, only if the record pins that digest."""

    model: str
    expected_digest: str | None = None

    def __post_init__(self) -> None:
        if self.expected_digest is not None:
            normalized = self.expected_digest.strip().lower()
            if not _HEX_BYTES.fullmatch(normalized):
                raise ValueError(
                    f"expected digest must be hex bytes, got {self.expected_digest!r}"
                )
            object.__setattr__(self, "expected_digest", normalized)


class ServableModel(Protocol):
    """A model whose bytes were verified, at a path the engine can read, until `close`."""

    @property
    def path(self) -> Path: ...

    @property
    def digest(self) -> str:
        """The dm-verity root hash, lower-case hex."""
        ...

    @property
    def record(self) -> TrustedRecord:
        """The trusted record that vouches for the files, and pins the engine settings."""
        ...

    def close(self) -> None: ...


class CheckedRequest(Protocol):
    """A load request that passed the synchronous checks, ready to be verified."""

    @property
    def model(self) -> str: ...

    @property
    def digest(self) -> str: ...


class ModelSource(Protocol):
    def check(self, request: LoadRequest) -> CheckedRequest: ...

    def verify(self, checked: CheckedRequest, context: OperationContext) -> ServableModel: ...


class RunningEngine(Protocol):
    def returncode(self) -> int | None: ...

    def healthy(self) -> bool: ...

    def log_tail(self) -> tuple[str, ...]: ...

    def stop(self) -> int | None: ...


class EngineStarter(Protocol):
    def start(
        self, model_path: Path, served_model_name: str, context: OperationContext,
        engine_settings: ModelEngineSettings = NO_ENGINE_SETTINGS,
    ) -> RunningEngine: ...


class OperationContext:
    """How a step reports progress, timings and its engine's output, and learns of cancellation.

    Progress is in the step's own 0..1 scale; `scaled` gives a step a slice of the operation's.
    """

    def __init__(
        self,
        machine: StatusMachine,
        ticket: Ticket,
        cancelled: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        self._machine = machine
        self._ticket = ticket
        self.cancelled = cancelled
        self.clock = clock
        self._low = low
        self._high = high

    def scaled(self, low: float, high: float) -> OperationContext:
        span = self._high - self._low
        return OperationContext(
            self._machine, self._ticket, self.cancelled, self.clock,
            self._low + span * low, self._low + span * high,
        )

    def report(self, progress: float, message: str) -> None:
        """Record progress; raises OperationCancelledError once the lifecycle is closing, so
        that a long step (verification) stops at its next report."""
        self.raise_if_cancelled()
        self._machine.report(
            self._ticket, self._low + (self._high - self._low) * progress, message
        )

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise OperationCancelledError(f"{self._ticket.operation} cancelled: lifecycle closing")

    def attach_log(self, source: LogSource) -> None:
        self._machine.attach_log(self._ticket, source)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the enclosed step into the status's `timings` (also when it fails)."""
        started = self.clock()
        try:
            yield
        finally:
            self._machine.record_timing(self._ticket, name, self.clock() - started)
