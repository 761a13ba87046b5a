"""A stream the client received whole is `complete`, even when the client closes at `data: [DONE]`
before the engine ends its body (what the stock openai SDK does), and its receipt verifies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from support.service import Service, pack_model, start_service, wait_for_status
from support.verifying import VerifyingClient, verifying_client

from ratls.receipts import verify_receipt

MODEL = "tiny"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6}

pytestmark = pytest.mark.slow


def receipt_when_recorded(client: VerifyingClient, receipt_id: str) -> dict:
    """A stream's receipt is stored when the stream ends, just after the client has its bytes."""
    deadline = time.monotonic() + 10
    while (answer := client.http.get(f"/v1/receipts/{receipt_id}")).status_code == 404:
        assert time.monotonic() < deadline, "the receipt was never recorded"
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    work: Path = tmp_path_factory.mktemp("streams")
    models, roothash, _ = pack_model(work, MODEL, {"config.json": '{"kind": "tiny"}'})
    # Events 50 ms apart (a stream can be cut before its end), and the body ends a second after
    # [DONE]: a client that stops at [DONE] is gone by then.
    service = start_service(work, models, roothash, engine_env={
        "FAKE_VLLM_END_DELAY": "1.0", "FAKE_VLLM_STREAM_DELAY": "0.05"})
    yield service
    assert service.stop() == 0, service.log()[-3000:]


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[VerifyingClient]:
    with verifying_client(service) as operator:
        operator.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
        wait_for_status(operator.http, lambda s: s["proxy_status"] == "ready")
    with verifying_client(service) as client:
        yield client


def test_a_stream_closed_at_done_is_complete_and_verifies(client: VerifyingClient) -> None:
    body = json.dumps(CHAT | {"stream": True}).encode()
    received = b""
    with client.http.stream("POST", "/v1/chat/completions", content=body,
                            headers={"Content-Type": "application/json"}) as response:
        receipt_id = response.headers["x-receipt-id"]
        for chunk in response.iter_raw():
            received += chunk
            if received.rstrip().endswith(b"data: [DONE]"):
                break  # like the SDK: stop at [DONE] and close, the engine's body still open
    receipt = receipt_when_recorded(client, receipt_id)
    assert receipt["outcome"] == "complete"
    verify_receipt(receipt, body, received, client.certificate())


def test_stock_sdk_streams_are_all_complete(client: VerifyingClient) -> None:
    sdk = openai.OpenAI(base_url=client.base_url + "/v1", api_key="unused",
                        http_client=client.http, max_retries=0)
    outcomes = []
    for _ in range(5):
        raw = sdk.chat.completions.with_raw_response.create(**CHAT, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text
        outcomes.append(receipt_when_recorded(client, raw.headers["x-receipt-id"])["outcome"])
    assert outcomes == ["complete"] * 5


def test_a_stream_cut_before_done_is_still_client_disconnected(client: VerifyingClient) -> None:
    body = json.dumps(CHAT | {"stream": True, "max_tokens": 50}).encode()
    with client.http.stream("POST", "/v1/chat/completions", content=body,
                            headers={"Content-Type": "application/json"}) as response:
        receipt_id = response.headers["x-receipt-id"]
        next(response.iter_raw())
    assert receipt_when_recorded(client, receipt_id)["outcome"] == "client_disconnected"
