"""The model lifecycle: verified load, engine supervision, unload, restore at start.

`Lifecycle` orders the steps of `loader.lifecycle.steps` and keeps the state in a `StatusMachine`
(`loader.lifecycle.status`, where the states and transitions are described). Requests return a
snapshot at once; loads, unloads and restarts run on background threads. The load, failing closed
at each step:

    1. resolve the name under the models directory      } synchronous, in `load()`: a bad
    2. read the trusted record                           } request is refused and changes
    3. compare the expected digest, if the request names one } nothing
    4. stop the engine of the model being replaced, if any
    5. verify the image (progress feeds the status)
    6. only then spawn the engine, with the engine settings the record pins, and wait for its
       health
    7. hooks.on_ready (RTMR3, certificate)
    8. record the load in the state directory, report ready with the name and digest, and
       watch the engine

A failure at any step stops the engine's process group, releases the verified copy and puts the
error in the status. An engine that fails after ready is restarted on the same verified model
under the restart policy, or given up (the model is then unloaded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from loader.engine.kinds import EngineKind
from loader.errors import (
    EngineError,
    LifecycleClosedError,
    LoaderError,
    ModelNotLoadedError,
)
from loader.images.model_image import materialize_verified
from loader.lifecycle.engine_monitor import EngineMonitor
from loader.lifecycle.engine_starter import EngineLauncher
from loader.lifecycle.last_load import LastLoad, LastLoadStore
from loader.lifecycle.model_source import Materialize, VerifiedModels
from loader.lifecycle.status import ModelState, Operation, StatusMachine, StatusSnapshot, Ticket
from loader.lifecycle.steps import (
    CheckedRequest,
    EngineStarter,
    LoadRequest,
    ModelSource,
    OperationContext,
    RunningEngine,
    ServableModel,
)
from loader.settings import HealthSettings, LoaderSettings, RestartPolicy

logger = logging.getLogger(__name__)

VERIFY_SHARE = 0.6  # of a load's progress; the engine start takes the rest


@dataclass(frozen=True)
class ModelEvent:
    """What the hooks are told: which model, which digest, and why."""

    model: str
    digest: str
    generation: int
    reason: str  # ready: load, restore, restart; unloaded: unload, replace, failed


@dataclass(frozen=True)
class LifecycleHooks:
    """Callbacks of the appliance (RA-TLS certificate, RTMR3, status push).

    `on_ready` runs after the engine is healthy and before the status says ready; if it raises,
    the load fails and the engine is stopped (fail closed: no ready without a measured digest).
    `on_unloaded` runs after the engine of a model that was announced ready has stopped for good
    (unload, replaced by another load, or restarts given up); not at close. `on_status` gets
    every change of state; it must not block.
    """

    on_ready: Callable[[ModelEvent], None] | None = None
    on_unloaded: Callable[[ModelEvent], None] | None = None
    on_status: Callable[[StatusSnapshot], None] | None = None


class _Deployment:
    """A verified model being served: owned by the lifecycle, changed only under its lock."""

    def __init__(self, model: str, verified: ServableModel) -> None:
        self.model = model
        self.digest = verified.digest
        self.verified = verified
        self.engine: RunningEngine | None = None
        self.monitor: EngineMonitor | None = None


class Lifecycle:
    """One model at a time, verified before its engine starts. See the module docstring."""

    def __init__(
        self,
        models: ModelSource,
        engines: EngineStarter,
        *,
        store: LastLoadStore | None,
        restart: RestartPolicy,
        health: HealthSettings,
        hooks: LifecycleHooks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = models
        self._engines = engines
        self._store = store
        self._restart = restart
        self._health = health
        self._hooks = hooks or LifecycleHooks()
        self._clock = clock
        self._changed = threading.Condition()
        self._changes = 0
        self._machine = StatusMachine(clock, self._on_state_change)
        self._lock = threading.RLock()
        self._current: _Deployment | None = None
        self._workers: set[threading.Thread] = set()
        self._cancel = threading.Event()
        self._closed = False

    @classmethod
    def create(
        cls,
        settings: LoaderSettings,
        engine: EngineKind,
        *,
        hooks: LifecycleHooks | None = None,
        clock: Callable[[], float] = time.monotonic,
        materialize: Materialize = materialize_verified,
    ) -> Lifecycle:
        """The usual wiring: model images verified by `materialize` (userspace by default;
        `DmVerityActivator().activate` in the VM), the given engine kind, a state directory."""
        return cls(
            VerifiedModels(settings, materialize),
            EngineLauncher(engine, settings),
            store=LastLoadStore(settings.state_dir),
            restart=settings.restart,
            health=settings.health,
            hooks=hooks,
            clock=clock,
        )

    # -- requests ----------------------------------------------------------------------------

    def status(self) -> StatusSnapshot:
        return self._machine.snapshot()

    def load(self, model: str, expected_digest: str | None = None) -> StatusSnapshot:
        """Start loading `model`; returns the loading status at once.

        Raises, changing nothing: ValueError for a malformed digest, ModelNameError /
        ModelNotFoundError / RecordError / ExpectedDigestMismatchError from steps 1-3,
        LifecycleConflictError while a load or unload runs, LifecycleClosedError after close.
        """
        self._require_open()
        request = LoadRequest(model, expected_digest)
        # Conflict first, so that a busy lifecycle says so whatever the request; begin() checks
        # again, atomically.
        self._machine.require_can_begin(Operation.LOAD, model)
        checked = self._models.check(request)
        with self._lock:
            current = self._current
            if (current is not None and current.model == checked.model
                    and current.digest == checked.digest
                    and self._machine.snapshot().state is ModelState.READY):
                return self.status()  # already served: a retried request changes nothing
            self._begin(Operation.LOAD, model, f"load of {model} requested", self._run_load,
                        checked)
        return self.status()

    def unload(self, model: str | None = None) -> StatusSnapshot:
        """Start unloading; with `model`, only if that is the model loaded.

        With nothing loaded it changes nothing; from error it clears the error. Raises
        ModelNotLoadedError, LifecycleConflictError, LifecycleClosedError.
        """
        self._require_open()
        with self._lock:
            current = self._current
            if model is not None and current is not None and current.model != model:
                raise ModelNotLoadedError(
                    f"cannot unload {model}: it is not the loaded model",
                    check="unload target", expected=current.model, actual=model,
                )
            if current is None and self._machine.snapshot().state is ModelState.IDLE:
                return self.status()
            self._begin(Operation.UNLOAD, current.model if current is not None else None,
                        "unloading",
                        self._run_unload)
        return self.status()

    def restore(self) -> StatusSnapshot:
        """At start: load again the last model that was loaded successfully, if any.

        The whole load path runs, with the recorded digest as the expected one. A state file
        that cannot be trusted, or a restore refused at steps 1-3, is reported as an error.
        """
        self._require_open()
        if self._store is None:
            return self.status()
        self._machine.require_can_begin(Operation.RESTORE, None)
        model = None
        try:
            last = self._store.load()
            if last is None:
                return self.status()
            model = last.model
            checked = self._models.check(LoadRequest(last.model, last.digest))
        except LoaderError as error:  # reported in the status: nothing else asked for it
            with self._lock:
                self._require_open()
                self._fail(self._machine.begin(Operation.RESTORE, model, "restoring"), error)
            return self.status()
        with self._lock:
            self._begin(Operation.RESTORE, last.model, f"restoring {last.model}", self._run_load,
                        checked)
        return self.status()

    def wait_for(
        self, predicate: Callable[[StatusSnapshot], bool], timeout: float
    ) -> StatusSnapshot:
        """Block until a state change makes `predicate` true; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._changes
            snapshot = self.status()
            if predicate(snapshot):
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"lifecycle still {snapshot.state}: {snapshot.message}")
            with self._changed:
                def changed(seen: int = seen) -> bool:
                    return self._changes != seen

                self._changed.wait_for(changed, remaining)

    def close(self) -> None:
        """Cancel what runs, stop the engine, release the verified model. Idempotent.

        The last-load record is kept, so that the next start restores the model; the hooks are
        not called.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cancel.set()
        while True:
            with self._lock:
                workers = set(self._workers)
            if not workers:
                break
            for worker in workers:
                worker.join()
        ticket = self._machine.begin(Operation.UNLOAD, None, "closing")
        self._retire_current(None)
        self._machine.idle(ticket, "lifecycle closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- operations (worker threads) ---------------------------------------------------------

    def _run_load(self, ticket: Ticket, checked: CheckedRequest) -> None:
        context = OperationContext(self._machine, ticket, self._cancel, self._clock)
        try:
            self._retire_current("replace")
            with context.step("verify"):
                verified = self._models.verify(checked, context.scaled(0.0, VERIFY_SHARE))
            deployment = _Deployment(checked.model, verified)
            try:
                self._serve(deployment, ticket, context.scaled(VERIFY_SHARE, 1.0))
            except BaseException:
                verified.close()
                raise
        except Exception as error:
            self._fail(ticket, error)

    def _serve(self, deployment: _Deployment, ticket: Ticket, context: OperationContext) -> None:
        """Steps 6-8 (and a restart): start the engine, announce it, go ready, watch it."""
        verified = deployment.verified
        engine = self._engines.start(
            verified.path, deployment.model, context, verified.record.engine
        )
        try:
            context.raise_if_cancelled()
            self._call_hook(self._hooks.on_ready, deployment, ticket, str(ticket.operation))
            # 8 (first half). Recorded while still loading, so no unload can come in between.
            self._record_last_load(deployment)
            with self._lock:
                ready = self._machine.ready(
                    ticket, deployment.model, deployment.digest, f"serving {deployment.model}"
                )
                if ready:
                    deployment.engine = engine
                    deployment.monitor = EngineMonitor(
                        engine, self._health,
                        lambda error: self._on_engine_failure(deployment, ticket, error),
                        name=f"engine-monitor-{ticket.generation}",
                    )
                    self._current = deployment
                    deployment.monitor.start()
        except BaseException:
            engine.stop()
            raise
        if not ready:  # superseded after on_ready: undo the announcement too
            engine.stop()
            self._call_hook(self._hooks.on_unloaded, deployment, ticket, "superseded")
            raise LifecycleClosedError(f"{ticket.operation} of {deployment.model} superseded")
        logger.info("model %s ready (digest %s)", deployment.model, deployment.digest)

    def _record_last_load(self, deployment: _Deployment) -> None:
        if self._store is None:
            return
        try:
            self._store.save(LastLoad(deployment.model, deployment.digest))
        except (OSError, ValueError) as error:  # serving goes on; a restart will not restore
            logger.error("cannot record the last load in %s: %s", self._store.path, error)

    def _run_unload(self, ticket: Ticket) -> None:
        try:
            self._machine.report(ticket, 0.1, "stopping engine")
            self._retire_current("unload")
            if self._store is not None:
                self._store.clear()
        except Exception as error:
            self._fail(ticket, error)
            return
        self._machine.idle(ticket, "no model loaded")

    def _on_engine_failure(
        self, deployment: _Deployment, ticket: Ticket, error: EngineError
    ) -> None:
        """From the monitor: the ready engine failed. Report, clean up, restart by policy."""
        before = self.status()
        with self._lock:
            if self._current is not deployment:
                return
            message = f"engine of {deployment.model} failed"
            if not self._machine.fail(ticket, error, message):
                return
            engine, deployment.engine = deployment.engine, None
        logger.warning("%s: %s", message, error)
        if engine is not None:
            self._stop_engine(engine)  # the leader may be gone but not its helpers
        stable = before.in_state >= self._restart.stable_after
        attempt = 1 if stable else before.restarts + 1
        self._start_worker(self._restart_engine, deployment, ticket, attempt, error)

    def _restart_engine(
        self, deployment: _Deployment, failed: Ticket, attempt: int, error: Exception
    ) -> None:
        """Restart attempts with backoff, until one is ready, the policy gives up, or a newer
        operation (load, unload, close) supersedes the failed one."""
        policy = self._restart
        while attempt <= policy.max_restarts:
            delay = policy.backoff(attempt)
            note = (f"engine of {deployment.model} failed ({type(error).__name__}); "
                    f"restart {attempt} of {policy.max_restarts} in {delay:g} s")
            if not self._machine.note(failed, note) or self._cancel.wait(delay):
                return
            ticket = self._machine.begin_restart(
                failed, attempt, f"restarting engine of {deployment.model}"
            )
            if ticket is None:
                return
            logger.info("restarting engine of %s, attempt %d", deployment.model, attempt)
            try:
                self._serve(deployment, ticket, OperationContext(
                    self._machine, ticket, self._cancel, self._clock))
                return
            except Exception as restart_error:
                if not self._fail(ticket, restart_error):
                    return
                failed, attempt, error = ticket, attempt + 1, restart_error
        self._give_up(deployment, failed, error)

    def _give_up(self, deployment: _Deployment, failed: Ticket, error: Exception) -> None:
        with self._lock:
            if self._current is not deployment or not self._machine.is_current(failed):
                return
            self._current = None
        logger.error("giving up on the engine of %s: %s", deployment.model, error)
        # Released before the status says so: whoever reads "model unloaded" may rely on it.
        self._teardown(deployment, "failed")
        self._machine.note(failed, f"engine of {deployment.model} failed; restarts exhausted "
                                   f"({self._restart.max_restarts}); model unloaded")

    # -- resources ----------------------------------------------------------------------------

    def _retire_current(self, reason: str | None) -> None:
        """Stop serving the current model, if any; hooks are told unless `reason` is None."""
        with self._lock:
            deployment, self._current = self._current, None
        if deployment is not None:
            self._teardown(deployment, reason)

    def _teardown(self, deployment: _Deployment, reason: str | None) -> None:
        with self._lock:
            monitor, deployment.monitor = deployment.monitor, None
            engine, deployment.engine = deployment.engine, None
        if monitor is not None:
            monitor.stop()
        if engine is not None:
            self._stop_engine(engine)
        deployment.verified.close()
        if reason is not None:
            try:
                self._call_hook(self._hooks.on_unloaded, deployment, None, reason)
            except Exception:
                logger.exception("on_unloaded hook failed for %s", deployment.model)

    def _stop_engine(self, engine: RunningEngine) -> None:
        try:
            engine.stop()
        except EngineError as error:
            logger.error("engine did not stop: %s", error)

    # -- plumbing ------------------------------------------------------------------------------

    def _fail(self, ticket: Ticket, error: BaseException) -> bool:
        model = ticket.model or "the model"
        logger.warning("%s of %s failed: %s", ticket.operation, model, error)
        return self._machine.fail(ticket, error, f"{ticket.operation} of {model} failed")

    def _call_hook(
        self,
        hook: Callable[[ModelEvent], None] | None,
        deployment: _Deployment,
        ticket: Ticket | None,
        reason: str,
    ) -> None:
        if hook is not None:
            generation = ticket.generation if ticket else self._machine.snapshot().generation
            hook(ModelEvent(deployment.model, deployment.digest, generation, reason))

    def _require_open(self) -> None:
        if self._closed:
            raise LifecycleClosedError("the lifecycle is closed")

    def _start_worker(self, target: Callable[..., None], *args: object) -> None:
        """Run `target(*args)` on a worker thread that close() waits for; not once closing."""
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._workers.discard(threading.current_thread())

        with self._lock:
            if self._cancel.is_set():
                return
            worker = threading.Thread(target=run, name=f"lifecycle-{target.__name__}", daemon=True)
            self._workers.add(worker)
            worker.start()

    def _begin(
        self, operation: Operation, model: str | None, message: str,
        run: Callable[..., None], *args: object,
    ) -> None:
        """Begin `operation` and start `run(ticket, *args)` on a worker; the caller holds the
        lock, so close() either sees the worker or refuses the request."""
        self._require_open()
        ticket = self._machine.begin(operation, model, message)
        self._start_worker(run, ticket, *args)

    def _on_state_change(self, snapshot: StatusSnapshot) -> None:
        with self._changed:
            self._changes += 1
            self._changed.notify_all()
        if self._hooks.on_status is not None:
            self._hooks.on_status(snapshot)
