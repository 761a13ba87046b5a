"""The same flow with the real vLLM CPU build: `appliance serve --tee simulated` loads the tiny
random Llama (packed with `appliance model pack`), and the stock openai SDK chats and streams
through the ratls verifying client; the receipt verifies; unload and stop leave nothing behind.
The tiny model's text is junk (random weights): only shapes are asserted. About 1 minute.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import openai
import pytest
from support.engines import PROJECT_ROOT, real_vllm_bin
from support.service import pack_model_dir, start_service, wait_for_status
from support.verifying import verifying_client

from ratls.receipts import verify_receipt

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    vllm = real_vllm_bin()
    environment = os.environ | {"APPLIANCE_ENGINE_VENV": str(vllm.parent.parent)}
    built = subprocess.run([str(PROJECT_ROOT / "scripts" / "models.sh"), "tiny"], env=environment,
                           capture_output=True, text=True, timeout=300, check=True)
    return Path(built.stdout.strip().splitlines()[-1])


def test_real_vllm_through_the_appliance(tiny_model: Path, tmp_path: Path) -> None:
    models, roothash, digest = pack_model_dir(tmp_path, "tiny", tiny_model)
    service = start_service(tmp_path, models, roothash, vllm_bin=real_vllm_bin(),
                            args=["--engine-profile", "cpu", "--engine-arg=--max-model-len=512"])
    try:
        with verifying_client(service) as operator:
            load = operator.http.post(
                "/v1/models/load", json={"model": "tiny"}, headers=service.auth()
            )
            assert load.status_code == 202, load.text
            wait_for_status(
                operator.http, lambda s: s["proxy_status"] in ("ready", "error"), timeout=300
            )
            status = operator.http.get("/v1/models/status", headers=service.auth()).json()
            assert status["proxy_status"] == "ready", status
        with verifying_client(service) as client:
            result = client.last_result_after(lambda: client.http.get("/healthz"))
            assert result.model_digest == digest
            sdk = openai.OpenAI(
                base_url=service.url + "/v1", api_key="unused", http_client=client.http
            )
            raw = sdk.chat.completions.with_raw_response.create(
                model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
                temperature=0)
            completion = raw.parse()
            assert completion.choices[0].finish_reason in ("length", "stop")
            assert completion.usage.completion_tokens <= 8
            verify_receipt(client.receipt(raw.headers["x-receipt-id"]),
                           raw.http_response.request.content, raw.http_response.content,
                           client.certificate())
            chunks = list(sdk.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                temperature=0, stream=True, stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
            assert any(c.choices and c.choices[0].finish_reason for c in chunks)
            unload = client.http.post(
                "/v1/models/unload", json={"model": "tiny"}, headers=service.auth()
            )
            assert unload.status_code == 202
            wait_for_status(client.http, lambda s: s["proxy_status"] == "idle", timeout=60)
    finally:
        assert service.stop(timeout=60) == 0
