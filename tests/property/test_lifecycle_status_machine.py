"""Random interleavings of requests and (possibly stale) reports against the state machine.

Invariants: at most one operation at a time; generations only grow; a report from a ticket that
is not the latest changes nothing; a model is shown only while it is served or being unloaded;
progress stays in 0..1 and never decreases within an operation.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from loader.errors import LifecycleConflictError
from loader.lifecycle.status import (
    BUSY_STATES,
    ModelState,
    Operation,
    StatusMachine,
    StatusSnapshot,
    Ticket,
)

MODELS = st.sampled_from(["tiny", "small", "smollm2"])
DIGEST = "cd" * 32


class StatusMachineRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.changes: list[StatusSnapshot] = []
        self.machine = StatusMachine(lambda: self.now, self.changes.append)
        self.tickets: list[Ticket] = []
        self.last = self.machine.snapshot()

    def latest(self) -> Ticket | None:
        return self.tickets[-1] if self.tickets else None

    def stale(self, index: int) -> Ticket | None:
        older = [t for t in self.tickets if t != self.latest()]
        return older[index % len(older)] if older else None

    @rule(operation=st.sampled_from([Operation.LOAD, Operation.RESTORE, Operation.UNLOAD]),
          model=MODELS)
    def begin(self, operation: Operation, model: str) -> None:
        before = self.machine.snapshot()
        try:
            ticket = self.machine.begin(operation, model, "begin")
        except LifecycleConflictError:
            assert before.busy or operation is Operation.RESTORE
            assert self.machine.snapshot().generation == before.generation
            return
        assert not before.busy
        assert ticket.generation == before.generation + 1
        self.tickets.append(ticket)

    @rule(progress=st.floats(-1, 2, allow_nan=False))
    def report(self, progress: float) -> None:
        ticket = self.latest()
        if ticket is not None:
            before = self.machine.snapshot()
            self.machine.report(ticket, progress, "progress")
            if before.busy:
                assert self.machine.snapshot().progress >= before.progress

    @rule(model=MODELS)
    def finish(self, model: str) -> None:
        ticket = self.latest()
        if ticket is None:
            return
        if ticket.operation is Operation.UNLOAD:
            self.machine.idle(ticket, "idle")
        else:
            self.machine.ready(ticket, model, DIGEST, "ready")

    @rule()
    def fail(self) -> None:
        ticket = self.latest()
        if ticket is not None:
            self.machine.fail(ticket, RuntimeError("failed"))

    @rule(attempt=st.integers(1, 5))
    def restart(self, attempt: int) -> None:
        ticket = self.latest()
        if ticket is None:
            return
        before = self.machine.snapshot()
        restarted = self.machine.begin_restart(ticket, attempt, "restart")
        assert (restarted is not None) == (before.state is ModelState.ERROR)
        if restarted is not None:
            self.tickets.append(restarted)

    @precondition(lambda self: len(self.tickets) > 1)
    @rule(index=st.integers(0, 100), progress=st.floats(0, 1), model=MODELS)
    def stale_reports_change_nothing(self, index: int, progress: float, model: str) -> None:
        ticket = self.stale(index)
        assert ticket is not None
        before = self.machine.snapshot()
        assert not self.machine.report(ticket, progress, "stale")
        assert not self.machine.ready(ticket, model, DIGEST, "stale")
        assert not self.machine.idle(ticket, "stale")
        assert not self.machine.fail(ticket, RuntimeError("stale"))
        assert not self.machine.note(ticket, "stale")
        assert self.machine.begin_restart(ticket, 1, "stale") is None
        assert self.machine.snapshot() == before

    @rule(seconds=st.floats(0, 100))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def consistent(self) -> None:
        status = self.machine.snapshot()
        assert status.generation >= self.last.generation
        assert 0.0 <= status.progress <= 1.0
        assert status.elapsed >= 0.0
        shows_model = status.loaded_model is not None
        assert shows_model == (status.loaded_model_digest is not None)
        if status.state in (ModelState.IDLE, ModelState.LOADING, ModelState.ERROR):
            assert not shows_model
        if status.state is ModelState.READY:
            assert shows_model and status.progress == 1.0
        assert status.busy == (status.state in BUSY_STATES)
        self.last = status

    @invariant()
    def listener_saw_every_state(self) -> None:
        if self.changes:
            assert self.changes[-1].state is self.machine.snapshot().state


TestStatusMachine = StatusMachineRules.TestCase
