"""The model lifecycle end to end, with real processes: packed model images verified in
userspace (loader.images.model_image), the fake vLLM spawned in its own process group, real HTTP
health checks, real signals. Nothing is mocked.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from support.engines import fake_engine

from loader.engine.kinds import VllmEngine
from loader.engine.process_group import live_group_members
from loader.errors import (
    DataCorruptionError,
    EngineArgumentConflictError,
    EngineExitedError,
    EngineHealthTimeoutError,
    EngineUnhealthyError,
    ExpectedDigestMismatchError,
    LifecycleConflictError,
    LoaderError,
    ModelNameError,
    ModelNotFoundError,
    ModelNotLoadedError,
    RecordError,
    StateStoreError,
)
from loader.images.engine_settings import NO_ENGINE_SETTINGS, ModelEngineSettings
from loader.images.pack import pack_model
from loader.lifecycle.last_load import LAST_LOAD_FILE
from loader.lifecycle.operations import Lifecycle, LifecycleHooks, ModelEvent
from loader.lifecycle.status import ModelState, StatusSnapshot
from loader.settings import HealthSettings, LoaderSettings, RestartPolicy

WAIT = 20.0  # seconds; generous for a loaded 2-core machine, never reached when things work


@dataclass
class Harness:
    root: Path
    vllm_bin: Path
    settings: LoaderSettings
    events: list[tuple[str, ModelEvent]] = field(default_factory=list)
    statuses: list[StatusSnapshot] = field(default_factory=list)
    lifecycles: list[Lifecycle] = field(default_factory=list)

    @property
    def spawn_log(self) -> Path:
        return self.root / "spawns.jsonl"

    def spawns(self) -> list[dict]:
        if not self.spawn_log.exists():
            return []
        return [json.loads(line) for line in self.spawn_log.read_text().splitlines()]

    def engine(self, **faults: object) -> VllmEngine:
        return fake_engine(self.vllm_bin, spawn_log=self.spawn_log, **faults)

    def lifecycle(self, engine: VllmEngine | None = None, **hooks: object) -> Lifecycle:
        lifecycle = Lifecycle.create(
            self.settings, engine or self.engine(),
            hooks=LifecycleHooks(
                on_ready=hooks.get("on_ready", lambda e: self.events.append(("ready", e))),
                on_unloaded=lambda e: self.events.append(("unloaded", e)),
                on_status=self.statuses.append,
            ),
        )
        self.lifecycles.append(lifecycle)
        return lifecycle

    def pack(
        self, name: str, size: int = 256 * 1024, engine: ModelEngineSettings = NO_ENGINE_SETTINGS
    ) -> str:
        source = Path(tempfile.mkdtemp(dir=self.root, prefix=f"source-{name}-"))
        (source / "config.json").write_text(json.dumps({"model_type": "fake", "name": name}))
        (source / "model.safetensors").write_bytes(os.urandom(size))
        packed = pack_model(
            source, name, self.settings.models_dir, self.settings.roothash_dir, engine=engine
        )
        return packed.record.digest

    def private_copies(self) -> list[Path]:
        work = self.settings.work_dir
        return list(work.iterdir()) if work.exists() else []


@pytest.fixture
def harness(tmp_path: Path, fake_vllm_bin: Path) -> Iterator[Harness]:
    settings = LoaderSettings(
        models_dir=tmp_path / "models", roothash_dir=tmp_path / "roothash",
        work_dir=tmp_path / "work", state_dir=tmp_path / "state",
        health=HealthSettings(
            startup_timeout=10.0, poll_interval=0.05, check_interval=0.1, failure_threshold=2,
        ),
        restart=RestartPolicy(max_restarts=2, initial_backoff=0.1, max_backoff=0.5),
        stop_grace=2.0,
    )
    harness = Harness(tmp_path, fake_vllm_bin, settings)
    yield harness
    for lifecycle in harness.lifecycles:
        lifecycle.close()
    for spawn in harness.spawns():  # whatever a test did, no engine may outlive it
        assert live_group_members(spawn["pgid"]) == [], f"engine {spawn} left running"


def ready(status: StatusSnapshot) -> bool:
    return status.state is ModelState.READY


def settled(status: StatusSnapshot) -> bool:
    return status.state in (ModelState.READY, ModelState.IDLE, ModelState.ERROR)


def served_models(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]


# -- load and unload ---------------------------------------------------------------------------


def test_load_verifies_spawns_and_reports_ready(harness: Harness) -> None:
    digest = harness.pack("tiny")
    engine = harness.engine(start_delay=0.5)
    lifecycle = harness.lifecycle(engine)

    answered = lifecycle.load("tiny", expected_digest=digest.upper())
    assert answered.state is ModelState.LOADING  # returned at once; the load runs behind

    status = lifecycle.wait_for(ready, WAIT)
    assert (status.loaded_model, status.loaded_model_digest) == ("tiny", digest)
    assert status.progress == 1.0 and status.error is None
    assert [step for step, _ in status.timings] == ["verify", "engine_start", "health_wait"]
    assert any("Uvicorn running" in line for line in status.engine_log_tail)
    # The engine serves the verified private copy, not the image directory.
    (card,) = served_models(engine.port)
    assert card["id"] == "tiny"
    assert Path(card["root"]).is_relative_to(harness.settings.work_dir)
    assert harness.events == [("ready", ModelEvent("tiny", digest, status.generation, "load"))]
    assert [s.state for s in harness.statuses] == [ModelState.LOADING, ModelState.READY]
    last = json.loads((harness.settings.state_dir / LAST_LOAD_FILE).read_text())
    assert (last["model"], last["digest"]) == ("tiny", digest)


def test_ready_hook_runs_before_ready_and_can_refuse(harness: Harness) -> None:
    harness.pack("tiny")
    seen: list[ModelState] = []

    def refuse(event: ModelEvent) -> None:
        seen.append(lifecycle.status().state)
        raise RuntimeError("RTMR3 extend failed")

    lifecycle = harness.lifecycle(on_ready=refuse)
    lifecycle.load("tiny")
    status = lifecycle.wait_for(settled, WAIT)
    assert seen == [ModelState.LOADING]
    assert status.state is ModelState.ERROR
    assert status.error == "RTMR3 extend failed" and status.loaded_model is None
    assert harness.private_copies() == []
    assert not (harness.settings.state_dir / LAST_LOAD_FILE).exists()


def test_unload_stops_the_group_and_releases_the_copy(harness: Harness) -> None:
    digest = harness.pack("tiny")
    lifecycle = harness.lifecycle(harness.engine(child=1))
    lifecycle.load("tiny")
    lifecycle.wait_for(ready, WAIT)
    (spawn,) = harness.spawns()
    assert len(live_group_members(spawn["pgid"])) == 2  # the engine and its helper

    assert lifecycle.unload("tiny").state is ModelState.UNLOADING
    status = lifecycle.wait_for(lambda s: s.state is ModelState.IDLE, WAIT)
    assert status.loaded_model is None and status.loaded_model_digest is None
    assert live_group_members(spawn["pgid"]) == []
    assert harness.private_copies() == []
    assert not (harness.settings.state_dir / LAST_LOAD_FILE).exists()
    assert harness.events[-1] == ("unloaded", ModelEvent("tiny", digest, status.generation,
                                                         "unload"))


def test_unload_refuses_another_model_and_is_a_no_op_when_idle(harness: Harness) -> None:
    harness.pack("tiny")
    lifecycle = harness.lifecycle()
    idle = lifecycle.unload("tiny")
    assert idle.state is ModelState.IDLE and idle.generation == 0
    lifecycle.load("tiny")
    before = lifecycle.wait_for(ready, WAIT)
    with pytest.raises(ModelNotLoadedError) as raised:
        lifecycle.unload("other")
    assert (raised.value.expected, raised.value.actual) == ("tiny", "other")
    assert lifecycle.status().generation == before.generation


def test_load_of_the_served_model_changes_nothing(harness: Harness) -> None:
    digest = harness.pack("tiny")
    lifecycle = harness.lifecycle()
    lifecycle.load("tiny")
    before = lifecycle.wait_for(ready, WAIT)
    again = lifecycle.load("tiny", digest)
    assert again.generation == before.generation and again.state is ModelState.READY
    assert len(harness.spawns()) == 1


def test_loading_another_model_replaces_the_first(harness: Harness) -> None:
    first = harness.pack("tiny")
    second = harness.pack("small")
    engine = harness.engine()
    lifecycle = harness.lifecycle(engine)
    lifecycle.load("tiny")
    lifecycle.wait_for(ready, WAIT)
    lifecycle.load("small")
    status = lifecycle.wait_for(lambda s: ready(s) and s.loaded_model == "small", WAIT)
    assert status.loaded_model_digest == second
    old, new = harness.spawns()
    assert live_group_members(old["pgid"]) == [] and live_group_members(new["pgid"])
    assert served_models(engine.port)[0]["id"] == "small"
    assert ("unloaded", ModelEvent("tiny", first, status.generation, "replace")) in harness.events
    assert len(harness.private_copies()) == 1


# -- engine settings from the trusted record ----------------------------------------------------

SMOLLM = ModelEngineSettings(max_model_len=2048, args=("--max-num-seqs=4",))
MINILM = ModelEngineSettings(max_model_len=256, runner="pooling", args=("--max-num-seqs=8",))


def test_each_model_runs_with_the_settings_its_record_pins(harness: Harness) -> None:
    harness.pack("smollm", engine=SMOLLM)
    harness.pack("minilm", engine=MINILM)
    harness.pack("plain")
    engine = replace(harness.engine(), extra_args=("--seed=7",))  # the operator's, for all
    lifecycle = harness.lifecycle(engine)
    served = {}
    for model in ("smollm", "minilm", "plain"):
        lifecycle.load(model)
        lifecycle.wait_for(lambda s, model=model: ready(s) and s.loaded_model == model, WAIT)
        served[model] = served_models(engine.port)[0]["max_model_len"]
    # The fake engine's default length is 512, as vLLM's is the model's own.
    assert served == {"smollm": 2048, "minilm": 256, "plain": 512}
    tails = [spawn["argv"][spawn["argv"].index("--seed=7"):] for spawn in harness.spawns()]
    assert tails == [
        ["--seed=7", "--max-model-len=2048", "--max-num-seqs=4"],
        ["--seed=7", "--max-model-len=256", "--runner=pooling", "--max-num-seqs=8"],
        ["--seed=7"],
    ]


def test_a_restart_keeps_the_records_settings(harness: Harness) -> None:
    harness.pack("minilm", engine=MINILM)
    engine = harness.engine()
    lifecycle = harness.lifecycle(engine)
    lifecycle.load("minilm")
    lifecycle.wait_for(ready, WAIT)
    os.kill(harness.spawns()[0]["pid"], signal.SIGKILL)
    lifecycle.wait_for(lambda s: ready(s) and s.restarts == 1, WAIT)
    first, again = harness.spawns()
    assert first["argv"] == again["argv"]
    assert served_models(engine.port)[0]["max_model_len"] == 256


def test_a_flag_pinned_by_the_record_and_the_deployment_fails_the_load(harness: Harness) -> None:
    harness.pack("minilm", engine=MINILM)
    harness.pack("plain")
    # The deployment-wide length of the issue: refused for a model that pins its own.
    engine = replace(harness.engine(), extra_args=("--max-model-len=2048",))
    lifecycle = harness.lifecycle(engine)
    lifecycle.load("minilm")
    status = lifecycle.wait_for(settled, WAIT)
    assert status.state is ModelState.ERROR
    assert status.error_type == EngineArgumentConflictError.__name__
    assert "--max-model-len=256" in status.error and "--max-model-len=2048" in status.error
    assert harness.spawns() == [] and harness.private_copies() == []
    assert harness.events == []
    # A model that pins no length still gets the deployment's.
    lifecycle.load("plain")
    lifecycle.wait_for(ready, WAIT)
    assert served_models(engine.port)[0]["max_model_len"] == 2048


# -- one operation at a time -------------------------------------------------------------------


def test_concurrent_requests_get_a_conflict(harness: Harness) -> None:
    harness.pack("tiny")
    harness.pack("small")
    lifecycle = harness.lifecycle(harness.engine(start_delay=1.0))
    loading = lifecycle.load("tiny")
    for attempt in (lambda: lifecycle.load("small"), lambda: lifecycle.load("tiny"),
                    lifecycle.unload):
        with pytest.raises(LifecycleConflictError) as raised:
            attempt()
        assert raised.value.actual == "loading"
        assert lifecycle.status().generation == loading.generation
    status = lifecycle.wait_for(ready, WAIT)
    assert status.loaded_model == "tiny" and len(harness.spawns()) == 1


def test_conflict_wins_over_a_bad_name(harness: Harness) -> None:
    harness.pack("tiny")
    lifecycle = harness.lifecycle(harness.engine(start_delay=1.0))
    lifecycle.load("tiny")
    with pytest.raises(LifecycleConflictError):
        lifecycle.load("../etc/passwd")


# -- refusals: nothing is spawned --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../tiny", "tiny/../tiny", "/etc/passwd", ".hidden", "a b", ""])
def test_traversal_names_are_refused(harness: Harness, name: str) -> None:
    harness.pack("tiny")
    lifecycle = harness.lifecycle()
    with pytest.raises(ModelNameError):
        lifecycle.load(name)
    assert lifecycle.status().state is ModelState.IDLE and harness.spawns() == []


def test_symlink_escaping_the_models_directory_is_refused(harness: Harness) -> None:
    harness.pack("tiny")
    outside = harness.root / "outside"
    outside.mkdir()
    models = harness.settings.models_dir
    for suffix in (".img", ".verity"):
        (models / f"tiny{suffix}").rename(outside / f"evil{suffix}")
        (models / f"evil{suffix}").symlink_to(outside / f"evil{suffix}")
    (harness.settings.roothash_dir / "tiny.roothash").rename(
        harness.settings.roothash_dir / "evil.roothash")
    lifecycle = harness.lifecycle()
    with pytest.raises(ModelNameError) as raised:
        lifecycle.load("evil")
    assert raised.value.check == "path"
    assert harness.spawns() == []


def test_unpinned_model_is_refused_and_the_served_one_stays(harness: Harness) -> None:
    harness.pack("tiny")
    harness.pack("unpinned")
    (harness.settings.roothash_dir / "unpinned.roothash").unlink()
    lifecycle = harness.lifecycle()
    lifecycle.load("tiny")
    before = lifecycle.wait_for(ready, WAIT)
    with pytest.raises(RecordError):
        lifecycle.load("unpinned")
    with pytest.raises(ModelNotFoundError):
        lifecycle.load("absent")
    after = lifecycle.status()
    assert (after.state, after.loaded_model, after.generation) == (
        ModelState.READY, "tiny", before.generation)
    assert len(harness.spawns()) == 1


def test_expected_digest_must_match_the_record(harness: Harness) -> None:
    digest = harness.pack("tiny")
    lifecycle = harness.lifecycle()
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ExpectedDigestMismatchError) as raised:
        lifecycle.load("tiny", expected_digest=wrong)
    assert (raised.value.expected, raised.value.actual) == (wrong, digest)
    for malformed in ("not-hex", "abc", digest[:-1], ""):
        with pytest.raises(ValueError, match="hex bytes"):
            lifecycle.load("tiny", expected_digest=malformed)
    assert lifecycle.status().generation == 0 and harness.spawns() == []


def test_tampered_image_never_starts_the_engine(harness: Harness) -> None:
    harness.pack("tiny")
    image = harness.settings.models_dir / "tiny.img"
    with image.open("r+b") as data:  # one bit, in the middle of the weights
        data.seek(image.stat().st_size // 2)
        byte = data.read(1)
        data.seek(-1, os.SEEK_CUR)
        data.write(bytes([byte[0] ^ 1]))
    lifecycle = harness.lifecycle()
    lifecycle.load("tiny")
    status = lifecycle.wait_for(settled, WAIT)
    assert status.state is ModelState.ERROR
    assert status.error_type == DataCorruptionError.__name__
    assert status.message == "load of tiny failed"
    assert harness.spawns() == [] and harness.private_copies() == []
    assert [step for step, _ in status.timings] == ["verify"]


# -- engine failures ---------------------------------------------------------------------------


def test_health_timeout_fails_the_load_and_kills_the_group(harness: Harness) -> None:
    harness.pack("tiny")
    settings = harness.settings
    harness.settings = LoaderSettings(
        settings.models_dir, settings.roothash_dir, settings.work_dir, settings.state_dir,
        health=HealthSettings(startup_timeout=1.0, poll_interval=0.05), stop_grace=0.5,
    )
    lifecycle = harness.lifecycle(harness.engine(never_healthy=1, child=1, ignore_sigterm=1))
    lifecycle.load("tiny")
    status = lifecycle.wait_for(settled, WAIT)
    assert status.state is ModelState.ERROR
    assert status.error_type == EngineHealthTimeoutError.__name__
    assert status.engine_log_tail  # what the engine printed, for the operator
    (spawn,) = harness.spawns()
    assert live_group_members(spawn["pgid"]) == []
    assert harness.private_copies() == []


def test_crash_is_reported_then_restarted(harness: Harness) -> None:
    harness.pack("tiny")
    engine = harness.engine()
    lifecycle = harness.lifecycle(engine)
    lifecycle.load("tiny")
    first = lifecycle.wait_for(ready, WAIT)
    (spawn,) = harness.spawns()

    os.kill(spawn["pid"], signal.SIGKILL)
    failed = lifecycle.wait_for(lambda s: s.state is ModelState.ERROR, WAIT)
    assert failed.error_type == EngineExitedError.__name__
    assert failed.error == "engine exited with status -9"
    assert failed.engine_log_tail and failed.loaded_model is None

    status = lifecycle.wait_for(ready, WAIT)
    assert status.restarts == 1 and status.generation > first.generation
    assert status.loaded_model_digest == first.loaded_model_digest
    assert status.error == failed.error  # the last failure stays visible after the restart
    old, new = harness.spawns()
    assert new["pid"] != old["pid"] and live_group_members(old["pgid"]) == []
    assert new["model"] == old["model"]  # the same verified copy, not verified again
    assert served_models(engine.port)[0]["id"] == "tiny"
    assert [kind for kind, _ in harness.events] == ["ready", "ready"]
    assert harness.events[-1][1].reason == "restart"
    states = [state for state, _ in itertools.groupby(s.state for s in harness.statuses)]
    assert states == [ModelState.LOADING, ModelState.READY, ModelState.ERROR,
                      ModelState.LOADING, ModelState.READY]


def test_unhealthy_engine_is_restarted_then_given_up(harness: Harness) -> None:
    digest = harness.pack("tiny")
    # Healthy long enough to pass the start-up check, failing soon after: every restart too.
    lifecycle = harness.lifecycle(harness.engine(unhealthy_after=0.5))
    lifecycle.load("tiny")
    lifecycle.wait_for(ready, WAIT)
    status = lifecycle.wait_for(
        lambda s: s.state is ModelState.ERROR and "exhausted" in s.message, WAIT)
    assert status.error_type == EngineUnhealthyError.__name__
    assert status.restarts == 2  # max_restarts
    assert len(harness.spawns()) == 3
    assert all(live_group_members(s["pgid"]) == [] for s in harness.spawns())
    assert harness.private_copies() == []
    assert harness.events[-1] == ("unloaded", ModelEvent("tiny", digest, status.generation,
                                                         "failed"))
    # An unload clears the error; the lifecycle is usable again.
    lifecycle.unload()
    assert lifecycle.wait_for(settled, WAIT).state is ModelState.IDLE


def test_restart_superseded_by_an_unload_never_happens(harness: Harness) -> None:
    harness.pack("tiny")
    settings = harness.settings
    harness.settings = LoaderSettings(
        settings.models_dir, settings.roothash_dir, settings.work_dir, settings.state_dir,
        health=settings.health, restart=RestartPolicy(initial_backoff=1.0),
    )
    lifecycle = harness.lifecycle()
    lifecycle.load("tiny")
    lifecycle.wait_for(ready, WAIT)
    os.kill(harness.spawns()[0]["pid"], signal.SIGKILL)
    pending = lifecycle.wait_for(lambda s: "restart 1 of 3 in 1 s" in s.message, WAIT)
    assert pending.state is ModelState.ERROR

    lifecycle.unload()
    lifecycle.wait_for(lambda s: s.state is ModelState.IDLE, WAIT)
    time.sleep(1.5)  # past the backoff: the superseded restart must not run
    status = lifecycle.status()
    assert status.state is ModelState.IDLE and status.loaded_model is None
    assert len(harness.spawns()) == 1 and harness.private_copies() == []


# -- restore, close ----------------------------------------------------------------------------


def test_restore_after_restart_verifies_again(harness: Harness) -> None:
    digest = harness.pack("tiny")
    first = harness.lifecycle()
    first.load("tiny")
    first.wait_for(ready, WAIT)
    first.close()  # an appliance restart: the record stays
    assert first.status().state is ModelState.IDLE
    assert live_group_members(harness.spawns()[0]["pgid"]) == []

    second = harness.lifecycle()
    assert second.restore().state is ModelState.LOADING
    status = second.wait_for(ready, WAIT)
    assert (status.loaded_model, status.loaded_model_digest) == ("tiny", digest)
    assert status.operation == "restore"
    assert status.timings[0][0] == "verify"
    assert harness.events[-1][1].reason == "restore"


def test_restore_refuses_a_model_whose_record_changed(harness: Harness) -> None:
    harness.pack("tiny")
    first = harness.lifecycle()
    first.load("tiny")
    first.wait_for(ready, WAIT)
    first.close()
    for suffix in (".img", ".verity"):
        (harness.settings.models_dir / f"tiny{suffix}").unlink()
    (harness.settings.roothash_dir / "tiny.roothash").unlink()
    harness.pack("tiny")  # same name, other bytes: another digest

    second = harness.lifecycle()
    status = second.restore()
    assert status.state is ModelState.ERROR
    assert status.error_type == ExpectedDigestMismatchError.__name__
    assert len(harness.spawns()) == 1


@pytest.mark.parametrize("content", ["{", '{"version": 1, "model": "tiny"}',
                                     '{"version": 2, "model": "tiny", "digest": "ab"}'])
def test_restore_with_an_untrustworthy_state_file_is_an_error(
    harness: Harness, content: str
) -> None:
    harness.pack("tiny")
    harness.settings.state_dir.mkdir()
    (harness.settings.state_dir / LAST_LOAD_FILE).write_text(content)
    status = harness.lifecycle().restore()
    assert status.state is ModelState.ERROR and status.error_type == StateStoreError.__name__
    assert harness.spawns() == []


def test_restore_without_a_record_does_nothing(harness: Harness) -> None:
    lifecycle = harness.lifecycle()
    assert lifecycle.restore().state is ModelState.IDLE and lifecycle.status().generation == 0


def test_close_while_loading_leaves_nothing(harness: Harness) -> None:
    harness.pack("tiny")
    lifecycle = harness.lifecycle(harness.engine(start_delay=5))
    lifecycle.load("tiny")
    deadline = time.monotonic() + WAIT
    while not harness.spawns():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    lifecycle.close()
    assert time.monotonic() - started < 4  # cancelled, not waited out
    assert lifecycle.status().state is ModelState.IDLE
    assert live_group_members(harness.spawns()[0]["pgid"]) == []
    assert harness.private_copies() == []
    with pytest.raises(LoaderError):
        lifecycle.load("tiny")


# -- what the loader logs --------------------------------------------------------------------


def test_engine_output_never_reaches_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness.pack("tiny")
    engine = harness.engine(log_prompts=1)
    lifecycle = harness.lifecycle(engine)
    lifecycle.load("tiny")
    lifecycle.wait_for(ready, WAIT)
    secret = "my secret prompt 4242"
    response = httpx.post(
        f"http://127.0.0.1:{engine.port}/v1/chat/completions", timeout=5,
        json={"model": "tiny", "messages": [{"role": "user", "content": secret}]},
    )
    assert response.status_code == 200
    deadline = time.monotonic() + WAIT
    while not any(secret in line for line in lifecycle.status().engine_log_tail):
        assert time.monotonic() < deadline  # the engine did print it ...
        time.sleep(0.02)
    lifecycle.unload()
    lifecycle.wait_for(settled, WAIT)
    assert secret not in caplog.text  # ... and the loader never logged it
    assert "model tiny ready" in caplog.text
