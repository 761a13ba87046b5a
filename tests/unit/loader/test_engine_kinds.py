"""Engine kinds (loader.engine.kinds): the vLLM command line and environment, built from
settings, and a model's own arguments next to the deployment's (loader.engine.arguments)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from loader.engine.kinds import (
    VLLM_CPU_DEVELOPMENT_ENV,
    VLLM_OFFLINE_ENV,
    VllmEngine,
    engine_environment,
    require_free_port,
)
from loader.errors import EngineArgumentConflictError, EngineStartError

VLLM = Path("/opt/engine/bin/vllm")


def test_production_command_binds_loopback_and_names_the_model() -> None:
    engine = VllmEngine.production(VLLM, port=8011, extra_args=("--max-model-len", "4096"))
    assert engine.command(Path("/run/models/tiny"), "tiny") == (
        "/opt/engine/bin/vllm", "serve", "/run/models/tiny", "--host", "127.0.0.1",
        "--port", "8011", "--served-model-name", "tiny", "--max-model-len", "4096",
    )
    assert dict(engine.environment()) == dict(VLLM_OFFLINE_ENV)


def test_cpu_development_adds_eager_uni_and_cpu_environment() -> None:
    engine = VllmEngine.cpu_development(VLLM, port=8012, env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    command = engine.command(Path("/m"), "tiny")
    assert command[command.index("--enforce-eager"):] == (
        "--enforce-eager", "--distributed-executor-backend", "uni")
    environment = engine.environment()
    assert environment["VLLM_CPU_KVCACHE_SPACE"] == "2"  # the caller's value wins
    assert environment["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert set(VLLM_CPU_DEVELOPMENT_ENV) <= set(environment)


@pytest.mark.parametrize("arg", ["--host", "--port=9000", "--served-model-name"])
def test_extra_args_cannot_override_what_the_loader_sets(arg: str) -> None:
    with pytest.raises(ValueError, match="set by the loader"):
        VllmEngine.production(VLLM, extra_args=(arg, "0.0.0.0"))


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_must_be_a_port(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        VllmEngine(VLLM, port)


def test_settings_env_is_read_only_after_construction() -> None:
    given = {"A": "1"}
    engine = VllmEngine(VLLM, 8000, env=given)
    given["A"] = "changed"
    assert engine.environment()["A"] == "1"
    with pytest.raises(TypeError):
        engine.environment()["B"] = "2"  # type: ignore[index]


def test_engine_environment_passes_only_the_allowlist() -> None:
    parent = {
        "PATH": "/usr/bin", "HOME": "/root", "APPLIANCE_LOAD_TOKEN": "secret",
        "VIRTUAL_ENV": "/app/.venv", "PYTHONPATH": "/app",
    }
    environment = engine_environment(VllmEngine.production(VLLM), parent)
    assert environment["PATH"] == "/usr/bin" and environment["HOME"] == "/root"
    assert "APPLIANCE_LOAD_TOKEN" not in environment
    assert "VIRTUAL_ENV" not in environment and "PYTHONPATH" not in environment
    assert environment["HF_HUB_OFFLINE"] == "1"


def test_busy_port_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(EngineStartError) as raised:
            require_free_port(port)
        assert raised.value.check == "engine port free"
    require_free_port(port)  # free again once closed


# -- a model's arguments (pinned by its record) ------------------------------------------------

MODEL_ARGS = ("--max-model-len=256", "--runner=pooling", "--max-num-seqs=8")


def test_model_args_come_last_after_the_deployments() -> None:
    deployment = ("--max-num-batched-tokens=512",)
    engine = VllmEngine.cpu_development(VLLM, port=8013, extra_args=deployment)
    command = engine.command(Path("/m"), "minilm", MODEL_ARGS)
    assert command[-4:] == ("--max-num-batched-tokens=512", *MODEL_ARGS)
    assert command[:3] == ("/opt/engine/bin/vllm", "serve", "/m")
    assert engine.command(Path("/m"), "minilm") == command[:-3]


@pytest.mark.parametrize(
    "deployment",
    [
        ("--max-model-len=2048",),  # the issue: SmolLM2's length given to every model
        ("--max-model-len", "2048"),  # value as its own token
        ("--max_model_len=2048",),  # vLLM reads underscores as dashes
        ("--max-num-seqs=4",),
    ],
    ids=["same flag", "separate value", "underscore spelling", "args flag"],
)
def test_a_flag_pinned_by_the_model_and_the_deployment_is_refused(
    deployment: tuple[str, ...],
) -> None:
    engine = VllmEngine.production(VLLM, extra_args=deployment)
    with pytest.raises(EngineArgumentConflictError) as raised:
        engine.command(Path("/m"), "minilm", MODEL_ARGS)
    assert raised.value.check == "engine arguments"
    assert deployment[0] in str(raised.value)


@pytest.mark.parametrize(
    ("deployment", "model"),
    [
        ("--no-enable-prefix-caching", "--enable-prefix-caching"),
        ("--enable-prefix-caching", "--no-enable-prefix-caching"),
        ("--device-memory-utilization=0.5", "--gpu-memory-utilization=0.9"),
    ],
    ids=["switch off vs on", "switch on vs off", "alias"],
)
def test_other_spellings_of_the_same_flag_conflict(deployment: str, model: str) -> None:
    engine = VllmEngine.production(VLLM, extra_args=(deployment,))
    with pytest.raises(EngineArgumentConflictError, match="set it in one place"):
        engine.command(Path("/m"), "m", (model,))


@pytest.mark.parametrize("model", ["--port=9000", "--host=0.0.0.0", "--served-model-name=x"])
def test_model_args_cannot_set_what_the_loader_sets(model: str) -> None:
    with pytest.raises(EngineArgumentConflictError) as raised:
        VllmEngine.production(VLLM).command(Path("/m"), "m", (model,))
    assert raised.value.check == "engine arguments"


@pytest.mark.parametrize("model", ["8", "-q=awq", "", "--", "--=1"])
def test_model_args_must_each_be_one_flag_token(model: str) -> None:
    with pytest.raises(EngineStartError, match="one --flag"):
        VllmEngine.production(VLLM).command(Path("/m"), "m", (model,))
