"""The lifecycle's state machine (loader.lifecycle.status): transitions, conflicts, generations."""

from __future__ import annotations

import json

import pytest

from loader.errors import LifecycleConflictError
from loader.lifecycle.status import ModelState, Operation, StatusMachine, StatusSnapshot

DIGEST = "ab" * 32


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def machine(clock: ManualClock) -> StatusMachine:
    return StatusMachine(clock)


def test_starts_idle_with_nothing_loaded(machine: StatusMachine) -> None:
    status = machine.snapshot()
    assert (status.state, status.loaded_model, status.generation) == (ModelState.IDLE, None, 0)
    assert status.progress == 0.0 and not status.busy


def test_load_goes_loading_then_ready_with_name_and_digest(
    machine: StatusMachine, clock: ManualClock
) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "load requested")
    assert machine.snapshot().state is ModelState.LOADING
    assert machine.snapshot().loaded_model is None  # not served while loading
    clock.now += 5
    assert machine.ready(ticket, "tiny", DIGEST, "serving tiny")
    status = machine.snapshot()
    assert (status.state, status.loaded_model, status.loaded_model_digest) == (
        ModelState.READY, "tiny", DIGEST)
    assert status.progress == 1.0
    assert (status.elapsed, status.in_state) == (5.0, 0.0)  # the load took 5 s
    clock.now += 7
    assert (machine.snapshot().elapsed, machine.snapshot().in_state) == (12.0, 7.0)


@pytest.mark.parametrize("second", [Operation.LOAD, Operation.UNLOAD, Operation.RESTORE])
@pytest.mark.parametrize("first", [Operation.LOAD, Operation.UNLOAD])
def test_second_operation_while_busy_is_a_conflict(
    machine: StatusMachine, first: Operation, second: Operation
) -> None:
    machine.begin(first, "tiny", "")
    before = machine.snapshot()
    with pytest.raises(LifecycleConflictError) as raised:
        machine.begin(second, "other", "")
    assert raised.value.check == "one operation at a time"
    assert raised.value.actual == str(before.state)
    assert machine.snapshot() == before  # nothing changed, not even the generation


def test_restore_only_from_idle(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.ready(ticket, "tiny", DIGEST, "")
    with pytest.raises(LifecycleConflictError, match="cannot restore"):
        machine.begin(Operation.RESTORE, "tiny", "")


def test_progress_never_moves_backwards_and_stays_in_range(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.report(ticket, 0.4, "verifying 40%")
    machine.report(ticket, 0.2, "late report")
    assert machine.snapshot().progress == 0.4
    assert machine.snapshot().message == "late report"
    machine.report(ticket, 7.0, "beyond")
    assert machine.snapshot().progress == 1.0


def test_superseded_ticket_changes_nothing(machine: StatusMachine) -> None:
    old = machine.begin(Operation.LOAD, "tiny", "")
    machine.fail(old, RuntimeError("boom"))
    new = machine.begin(Operation.LOAD, "small", "")
    before = machine.snapshot()
    assert not machine.report(old, 0.9, "stale")
    assert not machine.ready(old, "tiny", DIGEST, "stale")
    assert not machine.fail(old, RuntimeError("stale"))
    assert not machine.note(old, "stale")
    assert not machine.attach_log(old, lambda: ("stale",))
    assert not machine.record_timing(old, "verify", 1.0)
    assert machine.begin_restart(old, 1, "stale") is None
    assert machine.snapshot() == before
    assert machine.ready(new, "small", DIGEST, "serving")


def test_failure_reports_the_error_and_drops_the_model(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.ready(ticket, "tiny", DIGEST, "")
    machine.fail(ticket, ValueError("engine exited with status -9"), "engine of tiny failed")
    status = machine.snapshot()
    assert status.state is ModelState.ERROR and status.loaded_model is None
    assert (status.error, status.error_type) == ("engine exited with status -9", "ValueError")
    assert status.message == "engine of tiny failed"


def test_restart_only_while_the_failure_is_the_latest_event(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.ready(ticket, "tiny", DIGEST, "")
    machine.fail(ticket, RuntimeError("crash"))
    restart = machine.begin_restart(ticket, 1, "restarting")
    assert restart is not None and restart.operation is Operation.RESTART
    status = machine.snapshot()
    assert (status.state, status.restarts, status.error) == (ModelState.LOADING, 1, "crash")
    assert machine.begin_restart(ticket, 2, "again") is None  # not in error any more
    machine.ready(restart, "tiny", DIGEST, "")
    assert machine.snapshot().restarts == 1 and machine.snapshot().error == "crash"


def test_restart_is_superseded_by_an_unload(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.ready(ticket, "tiny", DIGEST, "")
    machine.fail(ticket, RuntimeError("crash"))
    unload = machine.begin(Operation.UNLOAD, "tiny", "unloading")
    machine.idle(unload, "no model loaded")
    assert machine.begin_restart(ticket, 1, "restarting") is None
    assert machine.snapshot().state is ModelState.IDLE


def test_unload_keeps_the_model_visible_until_idle(machine: StatusMachine) -> None:
    load = machine.begin(Operation.LOAD, "tiny", "")
    machine.ready(load, "tiny", DIGEST, "")
    unload = machine.begin(Operation.UNLOAD, "tiny", "unloading")
    assert machine.snapshot().loaded_model == "tiny"
    assert not machine.ready(unload, "tiny", DIGEST, "")  # an unload cannot end ready
    assert machine.idle(unload, "no model loaded")
    status = machine.snapshot()
    assert (status.state, status.loaded_model, status.loaded_model_digest) == (
        ModelState.IDLE, None, None)


def test_a_new_operation_clears_the_last_error(machine: StatusMachine) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.fail(ticket, RuntimeError("bad"))
    machine.begin(Operation.UNLOAD, None, "")
    assert machine.snapshot().error is None


def test_engine_log_comes_from_the_attached_source_and_resets(machine: StatusMachine) -> None:
    lines = ["INFO starting"]
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.attach_log(ticket, lambda: tuple(lines))
    lines.append("INFO ready")
    assert machine.snapshot().engine_log_tail == ("INFO starting", "INFO ready")
    machine.fail(ticket, RuntimeError("x"))
    assert machine.snapshot().engine_log_tail  # the failure's tail stays for the operator
    machine.begin(Operation.LOAD, "tiny", "")
    assert machine.snapshot().engine_log_tail == ()


def test_listener_sees_each_state_change_once_in_order(machine: StatusMachine) -> None:
    seen: list[StatusSnapshot] = []
    machine = StatusMachine(ManualClock(), seen.append)
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.report(ticket, 0.5, "half")  # progress is not a change of state
    machine.ready(ticket, "tiny", DIGEST, "")
    assert [(s.state, s.generation) for s in seen] == [
        (ModelState.LOADING, 1), (ModelState.READY, 1)]


def test_failing_listener_does_not_break_transitions(caplog: pytest.LogCaptureFixture) -> None:
    def broken(snapshot: StatusSnapshot) -> None:
        raise RuntimeError("listener bug")

    machine = StatusMachine(ManualClock(), broken)
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    assert machine.ready(ticket, "tiny", DIGEST, "")
    assert "status listener failed" in caplog.text


def test_snapshot_as_dict_is_json(machine: StatusMachine, clock: ManualClock) -> None:
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    machine.record_timing(ticket, "verify", 1.5)
    clock.now += 2
    machine.ready(ticket, "tiny", DIGEST, "serving tiny")
    data = json.loads(json.dumps(machine.snapshot().as_dict()))
    assert data["state"] == "ready" and data["operation"] == "load"
    assert data["timings"] == {"verify": 1.5}
    assert data["loaded_model_digest"] == DIGEST
