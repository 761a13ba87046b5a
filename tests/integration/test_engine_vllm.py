"""The real engine tier: vLLM's CPU build serving the tiny random Llama through the lifecycle.

The model is built (scripts/models.sh tiny, cached) and packed with `appliance model pack`,
then loaded: verified in userspace, `vllm serve` spawned by the loader, health waited for; a chat
completion (plain and streamed) is answered through the stock openai SDK; the unload leaves no
process behind. About 30-60 s, most of it vLLM's start. The tiny model's text is junk (random
weights): only shapes are asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from support.engines import PROJECT_ROOT, free_port, real_vllm_bin

from loader.engine.kinds import VllmEngine
from loader.engine.process_group import live_group_members
from loader.lifecycle.operations import Lifecycle
from loader.lifecycle.status import ModelState
from loader.settings import HealthSettings, LoaderSettings

pytestmark = [pytest.mark.engine, pytest.mark.slow]

START_TIMEOUT = 240.0  # vLLM starts in ~20 s alone; CI shares 2 cores with other tests


@pytest.fixture(scope="module")
def vllm_bin() -> Path:
    return real_vllm_bin()


@pytest.fixture(scope="module")
def tiny_model(vllm_bin: Path) -> Path:
    environment = os.environ | {"APPLIANCE_ENGINE_VENV": str(vllm_bin.parent.parent)}
    built = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "models.sh"), "tiny"], env=environment,
        capture_output=True, text=True, timeout=300, check=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


def test_tiny_llama_load_chat_unload(vllm_bin: Path, tiny_model: Path, tmp_path: Path) -> None:
    settings = LoaderSettings(
        models_dir=tmp_path / "models", roothash_dir=tmp_path / "roothash",
        work_dir=tmp_path / "work", state_dir=tmp_path / "state",
        health=HealthSettings(startup_timeout=START_TIMEOUT),
    )
    # 1. Pack with the operator's command.
    subprocess.run(
        [sys.executable, "-m", "appliance", "model", "pack", str(tiny_model), "--name", "tiny",
         "--models-dir", str(settings.models_dir), "--roothash-dir", str(settings.roothash_dir)],
        check=True, capture_output=True, timeout=120,
    )
    engine = VllmEngine.cpu_development(vllm_bin, port=free_port(),
                                        extra_args=("--max-model-len", "512"))
    with Lifecycle.create(settings, engine) as lifecycle:
        # 2. Load: verify, spawn vLLM, wait for its health.
        lifecycle.load("tiny")
        status = lifecycle.wait_for(lambda s: not s.busy, START_TIMEOUT + 30)
        assert status.state is ModelState.READY, (status.error, status.engine_log_tail[-20:])
        assert status.loaded_model == "tiny" and len(status.loaded_model_digest) == 64
        groups = engine_process_groups(settings.work_dir)
        assert groups, "no process serves the verified copy"

        # 3. The real server answers OpenAI requests for the served name.
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{engine.port}/v1", api_key="unused",
                               max_retries=0, timeout=60)
        (card,) = client.models.list().data
        assert card.id == "tiny"
        assert Path(card.model_extra["root"]).is_relative_to(settings.work_dir)
        messages = [{"role": "user", "content": "Hello"}]
        reply = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0)
        assert reply.choices[0].finish_reason in ("length", "stop")
        assert reply.usage.completion_tokens >= 1
        chunks = list(client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == reply.choices[0].message.content  # temperature 0: the same text

        # 4. Unload: the engine's whole process group goes, and the verified copy.
        lifecycle.unload("tiny")
        status = lifecycle.wait_for(lambda s: not s.busy, 60)
        assert status.state is ModelState.IDLE
        assert list(settings.work_dir.iterdir()) == []
        assert all(live_group_members(group) == [] for group in groups)


def engine_process_groups(work_dir: Path) -> set[int]:
    """Process groups of the processes whose command line names a path under `work_dir`."""
    groups = set()
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_bytes()
        except OSError:  # not a process, or gone
            continue
        if str(work_dir).encode() in command:
            groups.add(int(stat[stat.rindex(b")") + 2:].split()[2]))
    return groups
