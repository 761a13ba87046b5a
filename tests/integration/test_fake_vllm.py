"""The fake vLLM (tests/support/fake_vllm.py): OpenAI shape through the stock SDK, raw SSE
framing, error envelopes and fault injection. Other tests rely on all of it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from support.engines import fake_engine

from loader.engine.kinds import VllmEngine
from loader.lifecycle.engine_starter import EngineLauncher, LaunchedEngine
from loader.lifecycle.status import Operation, StatusMachine
from loader.lifecycle.steps import OperationContext
from loader.settings import HealthSettings, LoaderSettings


@contextmanager
def running(engine: VllmEngine, tmp_path: Path) -> Iterator[LaunchedEngine]:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    settings = LoaderSettings(
        tmp_path, tmp_path, tmp_path, tmp_path,
        health=HealthSettings(startup_timeout=10, poll_interval=0.05), stop_grace=2,
    )
    machine = StatusMachine(time.monotonic)
    context = OperationContext(machine, machine.begin(Operation.LOAD, "m", ""), threading.Event())
    launched = EngineLauncher(engine, settings).start(model, "tiny", context)
    try:
        yield launched
    finally:
        launched.stop()


@pytest.fixture
def engine(fake_vllm_bin: Path, tmp_path: Path) -> Iterator[VllmEngine]:
    engine = fake_engine(fake_vllm_bin)
    with running(engine, tmp_path):
        yield engine


def client_for(engine: VllmEngine) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{engine.port}/v1", api_key="unused",
                         max_retries=0, timeout=10)


def raw_sse(engine: VllmEngine, path: str, body: dict) -> tuple[dict[str, str], bytes]:
    """Headers and the de-chunked body, read with http.client (no SDK smoothing)."""
    connection = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return headers, response.read()


def events_of(body: bytes) -> list[str]:
    assert body.endswith(b"\n\n")
    return [frame.removeprefix("data: ") for frame in body.decode().split("\n\n")[:-1]]


# -- the OpenAI shape --------------------------------------------------------------------------


def test_models_lists_the_served_name_and_root(engine: VllmEngine, tmp_path: Path) -> None:
    (card,) = client_for(engine).models.list().data
    assert card.id == "tiny" and card.model_extra["root"] == str(tmp_path / "model")


def test_chat_completion_is_deterministic_and_counts_tokens(engine: VllmEngine) -> None:
    client = client_for(engine)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)
    other = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Something else"}], max_tokens=5)
    choice = first.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert len(choice.message.content.split()) == 5
    assert choice.message.content == again.choices[0].message.content
    assert choice.message.content != other.choices[0].message.content
    assert first.usage.completion_tokens == 5
    assert first.usage.total_tokens == first.usage.prompt_tokens + 5
    default = client.chat.completions.create(model="tiny", messages=messages)
    assert default.choices[0].finish_reason == "stop" and default.usage.completion_tokens == 8


def test_chat_stream_matches_the_non_streamed_text(engine: VllmEngine) -> None:
    client = client_for(engine)
    messages = [{"role": "user", "content": "hello"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_sse_framing_is_chunked_and_ends_with_done(engine: VllmEngine) -> None:
    headers, body = raw_sse(engine, "/v1/completions",
                            {"model": "tiny", "prompt": "Once upon", "max_tokens": 3,
                             "stream": True})
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"].startswith("text/event-stream")
    events = events_of(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


def test_completions_and_embeddings(engine: VllmEngine) -> None:
    client = client_for(engine)
    completion = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=4)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == 4
    vectors = client.embeddings.create(model="tiny", input=["cat", "kitten", "cat"]).data
    assert [v.index for v in vectors] == [0, 1, 2]
    assert vectors[0].embedding == vectors[2].embedding != vectors[1].embedding
    assert abs(sum(x * x for x in vectors[0].embedding) - 1.0) < 1e-9


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "NotFoundError"),
        ({"model": "tiny", "messages": []}, 400, "BadRequestError"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
         400, "BadRequestError"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
         400, "BadRequestError"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
          "stream_options": {"include_usage": True}}, 400, "BadRequestError"),
    ],
)
def test_bad_requests_get_the_error_envelope(
    engine: VllmEngine, body: dict, status: int, kind: str
) -> None:
    response = httpx.post(f"http://127.0.0.1:{engine.port}/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (kind, status)


def test_sdk_raises_its_own_error_types(engine: VllmEngine) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client_for(engine).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}])


def test_malformed_json_and_unknown_paths(engine: VllmEngine) -> None:
    base = f"http://127.0.0.1:{engine.port}"
    bad = httpx.post(f"{base}/v1/completions", content=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"
    assert httpx.get(f"{base}/v1/nowhere").json() == {"detail": "Not Found"}
    assert httpx.get(f"{base}/v1/chat/completions").status_code == 405


# -- fault injection ---------------------------------------------------------------------------


def test_crash_after_n_requests(fake_vllm_bin: Path, tmp_path: Path) -> None:
    engine = fake_engine(fake_vllm_bin, crash_after_requests=2)
    with running(engine, tmp_path) as launched:
        client = client_for(engine)
        for _ in range(2):  # both answered, then the process is gone
            client.completions.create(model="tiny", prompt="x", max_tokens=1)
        deadline = time.monotonic() + 10
        while launched.returncode() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert launched.returncode() == 70


def test_stream_delay_and_abort(fake_vllm_bin: Path, tmp_path: Path) -> None:
    engine = fake_engine(fake_vllm_bin, stream_delay=0.2, abort_stream_after=2)
    with running(engine, tmp_path):
        connection = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
        started = time.monotonic()
        connection.request("POST", "/v1/completions", json.dumps(
            {"model": "tiny", "prompt": "x", "max_tokens": 5, "stream": True}))
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead) as torn:
            response.read()
        assert time.monotonic() - started >= 0.2  # one delay between the two events
        assert torn.value.partial.count(b"data: ") == 2
        assert b"[DONE]" not in torn.value.partial


def test_never_healthy_and_unhealthy_after(fake_vllm_bin: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    engine = fake_engine(fake_vllm_bin, never_healthy=1)
    process = launch_without_waiting(engine, model)
    try:
        assert wait_for_status(engine.port, "/health") == 503
        assert wait_for_status(engine.port, "/v1/models") == 200  # serving, just not healthy
    finally:
        process.stop()
    engine = fake_engine(fake_vllm_bin, unhealthy_after=0.3)
    with running(engine, tmp_path):
        assert httpx.get(f"http://127.0.0.1:{engine.port}/health").status_code == 200
        time.sleep(0.4)
        assert httpx.get(f"http://127.0.0.1:{engine.port}/health").status_code == 500


def test_response_delay(fake_vllm_bin: Path, tmp_path: Path) -> None:
    engine = fake_engine(fake_vllm_bin, response_delay=0.3)
    with running(engine, tmp_path):
        started = time.monotonic()
        client_for(engine).completions.create(model="tiny", prompt="x", max_tokens=1)
        assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("env", [{"FAKE_VLLM_START_DELAY": "soon"},
                                 {"FAKE_VLLM_CRASH_AFTER_REQUESTS": "0"}])
def test_bad_fault_settings_are_a_usage_error(
    fake_vllm_bin: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    import subprocess

    done = subprocess.run([str(fake_vllm_bin), "serve", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "FAKE_VLLM_" in done.stderr


def test_missing_model_directory_is_refused(fake_vllm_bin: Path, tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([str(fake_vllm_bin), "serve", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "does not exist" in done.stderr


# -- helpers -----------------------------------------------------------------------------------


def launch_without_waiting(engine: VllmEngine, model: Path) -> LaunchedEngine:
    import os

    from loader.engine.process_group import EngineProcess

    process = EngineProcess.spawn(
        engine.command(model, "tiny"), {"PATH": os.environ["PATH"], **engine.environment()},
        tail_lines=20,
    )
    settings = LoaderSettings(model, model, model, model, stop_grace=2)
    return LaunchedEngine(process, engine, settings)


def wait_for_status(port: int, path: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_port_is_loopback_only(engine: VllmEngine) -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    addresses.discard("127.0.0.1")
    for address in addresses:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.settimeout(1)
            assert probe.connect_ex((address, engine.port)) != 0
