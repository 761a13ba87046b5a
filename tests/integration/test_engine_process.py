"""Engine process groups (loader.engine.process_group) and the launcher
(loader.lifecycle.engine_starter), with real processes.

The engine is the fake vLLM (tests/support/fake_vllm.py), run exactly as vLLM would be.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from support.engines import fake_engine

from loader.engine.health import probe_health
from loader.engine.kinds import VllmEngine, require_free_port
from loader.engine.process_group import EngineProcess, live_group_members
from loader.errors import (
    EngineExitedError,
    EngineHealthTimeoutError,
    EngineStartError,
    OperationCancelledError,
)
from loader.images.engine_settings import ModelEngineSettings
from loader.lifecycle.engine_starter import EngineLauncher
from loader.lifecycle.status import Operation, StatusMachine
from loader.lifecycle.steps import OperationContext
from loader.settings import HealthSettings, LoaderSettings


def settings_for(tmp_path: Path, **health: float) -> LoaderSettings:
    return LoaderSettings(
        tmp_path / "models", tmp_path / "roothash", tmp_path / "work", tmp_path / "state",
        health=HealthSettings(**({"startup_timeout": 10.0, "poll_interval": 0.05} | health)),
        stop_grace=2.0, kill_timeout=5.0, log_tail_lines=50,
    )


def context_for(cancelled: threading.Event | None = None) -> tuple[StatusMachine, OperationContext]:
    machine = StatusMachine(time.monotonic)
    ticket = machine.begin(Operation.LOAD, "tiny", "")
    return machine, OperationContext(machine, ticket, cancelled or threading.Event())


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    return path


def spawn_python(code: str, tail_lines: int = 50) -> EngineProcess:
    return EngineProcess.spawn([sys.executable, "-c", code], {}, tail_lines=tail_lines)


def wait_for_exit(process: EngineProcess) -> int:
    deadline = time.monotonic() + 10
    while (returncode := process.returncode()) is None:
        assert time.monotonic() < deadline, "process did not exit"
        time.sleep(0.01)
    return returncode


def spawn_serving(engine: VllmEngine, model_dir: Path) -> EngineProcess:
    """The fake engine, spawned directly, once it answers (its signal handlers are set)."""
    process = EngineProcess.spawn(
        engine.command(model_dir, "tiny"), {"PATH": os.environ["PATH"], **engine.environment()},
        tail_lines=50,
    )
    deadline = time.monotonic() + 10
    while not probe_health(engine.port, "/health", 1.0):
        assert time.monotonic() < deadline and process.returncode() is None, process.log_tail()
        time.sleep(0.02)
    return process


# -- EngineProcess ---------------------------------------------------------------------------


def test_output_tail_is_bounded_and_printable() -> None:
    process = spawn_python(
        "import sys\n"
        "for i in range(100): print(f'line {i}')\n"
        "print('bell\\x07 and escape\\x1b[31m')\n"
        "sys.stdout.write('x' * 5000 + '\\n')",
        tail_lines=5,
    )
    assert wait_for_exit(process) == 0
    process.stop(grace=5, kill_timeout=5)
    tail = process.log_tail()
    assert len(tail) == 5
    assert tail[0] == "line 99"
    assert "\x07" not in tail[1] and "\x1b" not in tail[1] and tail[1].startswith("bell")
    assert all(len(line) <= 2048 for line in tail)  # a long line is split, not kept whole


def test_engine_gets_exactly_the_environment_given() -> None:
    process = EngineProcess.spawn(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        {"ONLY": "this"}, tail_lines=5,
    )
    wait_for_exit(process)
    process.stop(grace=5, kill_timeout=5)
    environment = json.loads(process.log_tail()[0])
    environment.pop("LC_CTYPE", None)  # Python may set it for a C locale
    assert environment == {"ONLY": "this"}


def test_missing_executable_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(EngineStartError) as raised:
        EngineProcess.spawn([str(tmp_path / "no-vllm")], {}, tail_lines=5)
    assert raised.value.check == "engine executable"


def test_exit_is_seen_without_reaping_so_the_group_id_stays_ours() -> None:
    process = spawn_python("import sys; sys.exit(3)")
    assert wait_for_exit(process) == 3
    # Not reaped yet: the zombie leader still holds the pid (= the group id).
    with open(f"/proc/{process.pid}/stat") as stat:
        assert stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    assert process.stop(grace=1, kill_timeout=1) == 3
    assert not os.path.exists(f"/proc/{process.pid}")


def test_stop_ends_the_whole_group_with_sigterm(fake_vllm_bin: Path, model_dir: Path) -> None:
    process = spawn_serving(fake_engine(fake_vllm_bin, child=1), model_dir)
    assert len(process.live_members()) == 2
    started = time.monotonic()
    assert process.stop(grace=10, kill_timeout=5) == 0  # a graceful shutdown
    assert time.monotonic() - started < 5
    assert live_group_members(process.pgid) == []


def test_sigterm_ignored_escalates_to_sigkill_after_grace(
    fake_vllm_bin: Path, model_dir: Path
) -> None:
    engine = fake_engine(fake_vllm_bin, ignore_sigterm=1, child=1, orphan_child=1)
    process = spawn_serving(engine, model_dir)
    started = time.monotonic()
    assert process.stop(grace=0.5, kill_timeout=5) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5
    assert live_group_members(process.pgid) == []


def test_helper_that_outlives_its_leader_is_killed(fake_vllm_bin: Path, model_dir: Path) -> None:
    # The leader exits at once on SIGTERM and leaves a helper that ignores SIGTERM behind.
    engine = fake_engine(fake_vllm_bin, child=1, orphan_child=1)
    process = spawn_serving(engine, model_dir)
    assert len(process.live_members()) == 2
    assert process.stop(grace=0.5, kill_timeout=5) == 0
    assert live_group_members(process.pgid) == []  # the helper too: at most a zombie is left


# -- EngineLauncher ---------------------------------------------------------------------------


def test_launch_reports_health_and_timings(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    engine = fake_engine(fake_vllm_bin, start_delay=0.3)
    machine, context = context_for()
    launched = EngineLauncher(engine, settings_for(tmp_path)).start(model_dir, "tiny", context)
    try:
        assert probe_health(engine.port, "/health", 1.0)
        status = machine.snapshot()
        assert [step for step, _ in status.timings] == ["engine_start", "health_wait"]
        assert dict(status.timings)["health_wait"] >= 0.3
        assert any("Uvicorn running" in line for line in status.engine_log_tail)
        assert 0.0 < status.progress < 1.0
    finally:
        launched.stop()
    assert live_group_members(launched.process.pgid) == []


def test_health_timeout_kills_the_whole_group(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    engine = fake_engine(fake_vllm_bin, never_healthy=1, child=1)
    _, context = context_for()
    launcher = EngineLauncher(engine, settings_for(tmp_path, startup_timeout=1.0))
    spawned: list[EngineProcess] = []
    original = EngineProcess.spawn

    def recording_spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawned.append(original(*args, **kwargs))
        return spawned[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EngineProcess, "spawn", recording_spawn)
        with pytest.raises(EngineHealthTimeoutError) as raised:
            launcher.start(model_dir, "tiny", context)
    assert raised.value.check == "engine health"
    assert raised.value.log_tail  # the operator sees what the engine said
    assert live_group_members(spawned[0].pgid) == []


def test_engine_exit_during_start_is_reported_with_its_output(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    engine = fake_engine(fake_vllm_bin, exit_at_start=4)
    _, context = context_for()
    with pytest.raises(EngineExitedError) as raised:
        EngineLauncher(engine, settings_for(tmp_path)).start(model_dir, "tiny", context)
    assert raised.value.returncode == 4
    assert any("injected start-up failure" in line for line in raised.value.log_tail)
    # The status names the cause: the error line, not the last line.
    assert str(raised.value).startswith(
        "engine exited before it was healthy with status 4: "
        "RuntimeError: injected start-up failure"
    )


def test_start_up_output_is_logged_and_serving_output_is_not(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = fake_engine(fake_vllm_bin, log_lines=3, log_prompts=1)
    _, context = context_for()
    caplog.set_level(logging.INFO, logger="loader.engine.startup")
    running = EngineLauncher(engine, settings_for(tmp_path)).start(model_dir, "tiny", context)
    try:
        started = [r.getMessage() for r in caplog.records if r.name == "loader.engine.startup"]
        assert started  # what the engine said while starting reached the appliance log
        caplog.clear()
        body = json.dumps({"model": "tiny", "prompt": "secret prompt text", "max_tokens": 1})
        request = urllib.request.Request(
            f"http://127.0.0.1:{engine.port}/v1/completions", data=body.encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()
        deadline = time.monotonic() + 5
        while not any("secret prompt text" in line for line in running.log_tail()):
            assert time.monotonic() < deadline, "the engine never printed the prompt"
            time.sleep(0.05)
        assert not [r for r in caplog.records if "secret prompt text" in r.getMessage()]
    finally:
        running.stop()


def test_busy_engine_port_is_refused_before_spawning(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    first = fake_engine(fake_vllm_bin)
    _, context = context_for()
    launcher = EngineLauncher(first, settings_for(tmp_path))
    running = launcher.start(model_dir, "tiny", context)
    try:
        spawn_log = tmp_path / "spawns.jsonl"
        second = fake_engine(fake_vllm_bin, first.port, spawn_log=spawn_log)
        with pytest.raises(EngineStartError, match="already in use"):
            EngineLauncher(second, settings_for(tmp_path)).start(model_dir, "tiny", context)
        assert not spawn_log.exists()
    finally:
        running.stop()


def test_cancel_during_health_wait_stops_the_engine(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    cancelled = threading.Event()
    _, context = context_for(cancelled)
    threading.Timer(0.5, cancelled.set).start()
    spawn_log = tmp_path / "spawns.jsonl"
    engine = fake_engine(fake_vllm_bin, never_healthy=1, spawn_log=spawn_log)
    with pytest.raises(OperationCancelledError):
        EngineLauncher(engine, settings_for(tmp_path)).start(model_dir, "tiny", context)
    pgid = json.loads(spawn_log.read_text())["pgid"]
    assert live_group_members(pgid) == []


# -- the model's engine settings --------------------------------------------------------------

MINILM = ModelEngineSettings(
    max_model_len=256, runner="pooling", dtype="float32", args=("--max-num-seqs=8",)
)


def served_card(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as answer:
        return json.loads(answer.read())["data"][0]


def test_launch_passes_the_records_engine_settings_last(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    spawn_log = tmp_path / "spawns.jsonl"
    engine = replace(fake_engine(fake_vllm_bin, spawn_log=spawn_log),
                     extra_args=("--max-num-batched-tokens=1024",))
    _, context = context_for()
    launched = EngineLauncher(engine, settings_for(tmp_path)).start(
        model_dir, "minilm", context, MINILM
    )
    try:
        argv = json.loads(spawn_log.read_text())["argv"]
        assert argv[-5:] == [
            "--max-num-batched-tokens=1024",  # the deployment's, then the model's
            "--max-model-len=256", "--runner=pooling", "--dtype=float32", "--max-num-seqs=8",
        ]
        card = served_card(engine.port)
        assert (card["id"], card["max_model_len"]) == ("minilm", 256)
    finally:
        launched.stop()


def test_flag_set_by_the_record_and_the_deployment_is_refused_before_spawning(
    fake_vllm_bin: Path, tmp_path: Path, model_dir: Path
) -> None:
    spawn_log = tmp_path / "spawns.jsonl"
    # The issue: SmolLM2's length passed to every model, and MiniLM's record pinning 256.
    engine = replace(fake_engine(fake_vllm_bin, spawn_log=spawn_log),
                     extra_args=("--max-model-len=2048",))
    machine, context = context_for()
    with pytest.raises(EngineStartError) as raised:
        EngineLauncher(engine, settings_for(tmp_path)).start(model_dir, "minilm", context, MINILM)
    assert raised.value.check == "engine arguments"
    assert "--max-model-len=256" in str(raised.value)
    assert "--max-model-len=2048" in str(raised.value)
    assert not spawn_log.exists()
    assert machine.snapshot().timings == ()
    require_free_port(engine.port)  # nothing listens
