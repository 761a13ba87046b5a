"""The worker's Flask app, wired by `build_worker`, against the fake vLLM (a real process).

Streaming through gunicorn and TLS is covered by tests/integration; here the app's routing,
validation, pass-through, receipts and error envelopes are checked with Flask's test client.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.worker_app import (
    DIGEST,
    LOAD_TOKEN,
    MODEL,
    SupervisorDouble,
    start_fake_engine,
    stop_engine,
)

from appliance.api_server import build_worker
from appliance.proxy import RECEIPT_HEADER
from appliance.receipts import canonical_bytes
from ratls.errors import IncompleteReceiptError
from ratls.receipts import verify_receipt
from ratls.signing import canonical_json

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5}


@pytest.fixture
def client(supervisor_double: SupervisorDouble):
    app, _tls = build_worker(supervisor_double.settings)
    return app.test_client()


def receipt_of(client, response) -> dict:
    receipt = client.get(f"/v1/receipts/{response.headers[RECEIPT_HEADER]}")
    assert receipt.status_code == 200
    return receipt.get_json()


def test_chat_is_passed_through_byte_for_byte_with_a_verifiable_receipt(
        client, supervisor_double: SupervisorDouble) -> None:
    # Unusual but valid JSON formatting must reach the engine unchanged (hash in the receipt).
    body = b'{ "model":"tiny",\n "messages":[{"role":"user","content":"Hello \\u00e9"}], "max_tokens":5 }'
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 200, response.data
    assert response.get_json()["usage"]["completion_tokens"] == 5
    receipt = receipt_of(client, response)
    certificate = supervisor_double.issuer.current().certificate.certificate
    verify_receipt(receipt, body, response.data, certificate)
    assert receipt["usage"]["completion_tokens"] == 5
    assert receipt["model"] == MODEL and receipt["model_digest"] == DIGEST
    assert (receipt["status"], receipt["outcome"]) == (200, "complete")


def test_stream_is_relayed_with_usage_and_a_receipt_over_the_whole_sse_body(
        client, supervisor_double: SupervisorDouble) -> None:
    body = json.dumps(CHAT | {"stream": True, "stream_options": {"include_usage": True}}).encode()
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    sse = response.get_data()
    events = [e for e in sse.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert len(events) >= 5 + 2
    receipt = receipt_of(client, response)
    verify_receipt(receipt, body, sse, supervisor_double.issuer.current().certificate.certificate)
    assert receipt["usage"]["completion_tokens"] == 5
    assert (receipt["status"], receipt["outcome"]) == (200, "complete")


def test_a_stream_the_engine_breaks_gets_an_engine_failed_receipt(
        tmp_path, supervisor_double: SupervisorDouble) -> None:
    (tmp_path / "aborting").mkdir()
    engine = start_fake_engine(tmp_path / "aborting", abort_stream_after=2)
    try:
        settings = supervisor_double.settings.model_copy(update={"vllm_port": engine.port})
        app, _tls = build_worker(settings)
        client = app.test_client()
        body = json.dumps(CHAT | {"stream": True}).encode()
        response = client.post("/v1/chat/completions", data=body, content_type="application/json")
        sse = response.get_data()
    finally:
        stop_engine(engine)
    assert response.status_code == 200
    assert sse.count(b"data: ") == 2 and b"[DONE]" not in sse
    receipt = receipt_of(client, response)
    assert (receipt["status"], receipt["outcome"]) == (200, "engine_failed")
    certificate = supervisor_double.issuer.current().certificate.certificate
    with pytest.raises(IncompleteReceiptError) as err:
        verify_receipt(receipt, body, sse, certificate)
    assert err.value.actual == "engine_failed"
    # The client holds every byte the appliance sent: allowed, the receipt binds them.
    verify_receipt(receipt, body, sse, certificate, allow_incomplete=True)
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
    assert ('appliance_streams_finished_total{outcome="engine_failed",'
            'route="/v1/chat/completions"} 1.0') in metrics.get_data(as_text=True)


def test_receipts_chain(client) -> None:
    hashes = []
    for _ in range(3):
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
        hashes.append(receipt_of(client, response))
    assert hashes[1]["previous_receipt_sha256"] == hashes[0]["receipt_sha256"]
    assert hashes[2]["previous_receipt_sha256"] == hashes[1]["receipt_sha256"]


def test_embeddings_and_engine_errors_pass_through(client) -> None:
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    assert response.status_code == 200 and len(response.get_json()["data"]) == 2
    # The engine's own 400 (vLLM's envelope) is relayed as is, with a receipt.
    bad = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": -1})
    assert bad.status_code == 400 and "error" in bad.get_json()
    bad_receipt = receipt_of(client, bad)
    assert (bad_receipt["status"], bad_receipt["outcome"]) == (400, "complete")


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b'{"messages": []}', 400, "missing_model"),
    (b'{"model": 7}', 400, "missing_model"),
    (b'{"model": "tiny", "stream": "yes"}', 400, "invalid_type"),
    (b'{"model": "other", "messages": []}', 404, "model_not_found"),
    (b"", 400, "invalid_json"),
])
def test_malformed_requests_get_envelopes(client, body: bytes, status: int, code: str) -> None:
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_oversize_body_is_413_before_reading(client) -> None:
    response = client.post("/v1/chat/completions", data=b"x" * (64 * 1024 + 1),
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "body_too_large"


def test_unknown_paths_and_methods(client) -> None:
    missing = client.get("/v1/nope")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "unknown_route"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert wrong.get_json()["error"]["type"] == "invalid_request_error"


def test_no_model_ready_is_503_and_models_is_empty(client, supervisor_double: SupervisorDouble) -> None:
    supervisor_double.status = {"proxy_status": "loading", "loaded_model": None}
    supervisor_double.publish()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_not_ready"
    assert client.get("/v1/models").get_json()["data"] == []


def test_models_lists_the_served_model_with_its_digest(client) -> None:
    data = client.get("/v1/models").get_json()["data"]
    assert data == [{"id": MODEL, "object": "model", "owned_by": "appliance", "digest": DIGEST}]


def test_engine_down_is_502(client, fake_engine) -> None:
    fake_engine.process.kill()
    fake_engine.process.wait()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.get_json()["error"]["type"] == "upstream_error"


class TestLifecycleAuth:
    def test_missing_and_wrong_tokens_are_401(self, client, supervisor_double) -> None:
        assert client.post("/v1/models/load", json={"model": MODEL}).status_code == 401
        wrong = client.post("/v1/models/load", json={"model": MODEL},
                            headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        basic = client.post("/v1/models/unload", headers={"Authorization": f"Basic {LOAD_TOKEN}"})
        assert basic.status_code == 401
        assert supervisor_double.requests == []

    def test_right_token_is_202_and_reaches_the_supervisor(self, client, supervisor_double) -> None:
        response = client.post("/v1/models/load", json={"model": MODEL, "digest": DIGEST.upper()},
                               headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
        assert response.status_code == 202
        assert response.get_json()["proxy_status"] == "loading"
        assert supervisor_double.requests == [("/load", {"model": MODEL, "digest": DIGEST})]
        unload = client.post("/v1/models/unload", headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
        assert unload.status_code == 202

    def test_conflict_is_409(self, client, supervisor_double) -> None:
        supervisor_double.busy = True
        response = client.post("/v1/models/load", json={"model": MODEL},
                               headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
        assert response.status_code == 409

    @pytest.mark.parametrize("body", [{"model": ""}, {"model": MODEL, "digest": "xyz"}, {}])
    def test_bad_load_bodies_are_400(self, client, body) -> None:
        response = client.post("/v1/models/load", json=body,
                               headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
        assert response.status_code == 400

    def test_no_token_configured_closes_lifecycle_unless_insecure(self, supervisor_double) -> None:
        closed = supervisor_double.settings.model_copy(update={"load_token": None})
        app, _ = build_worker(closed)
        response = app.test_client().post("/v1/models/load", json={"model": MODEL},
                                          headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "lifecycle_closed"
        open_ = closed.model_copy(update={"insecure_open_lifecycle": True})
        app, _ = build_worker(open_)
        assert app.test_client().post("/v1/models/load", json={"model": MODEL}).status_code == 202

    def test_status_is_public_but_the_engine_log_needs_the_token(self, client) -> None:
        public = client.get("/v1/models/status").get_json()
        assert public["proxy_status"] == "ready" and "engine_log_tail" not in public
        operator = client.get("/v1/models/status",
                              headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).get_json()
        assert operator["engine_log_tail"] == ["line"]


def test_attestation_validates_the_nonce_before_the_supervisor(client, supervisor_double) -> None:
    answer = client.get("/v1/attestation?nonce=" + "AB" * 16).get_json()
    assert answer["nonce"] == "ab" * 16
    # The supervisor is told which certificate the connection presented, to bind it.
    assert answer["certificate_der"] == supervisor_double.issuer.current().certificate.der.hex()
    for bad in ("", "xyz", "abc"):
        response = client.get(f"/v1/attestation?nonce={bad}")
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "nonce"
    assert client.get("/v1/attestation/collateral").get_json() == {"bundle": "collateral"}


def test_unknown_receipt_is_404(client) -> None:
    assert client.get("/v1/receipts/" + "0" * 32).status_code == 404
    assert client.get("/v1/receipts/../../etc").status_code == 404


def test_metrics_and_health(client) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json=CHAT | {"stream": True}).get_data()
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).get_data(as_text=True)
    assert 'appliance_http_requests_total{route="/v1/chat/completions",status="200"} 2.0' in text
    assert 'appliance_streams_finished_total{outcome="complete",route="/v1/chat/completions"} 1.0' in text
    assert "appliance_relayed_events_total" in text
    assert client.get("/healthz").get_json() == {"status": "ok", "model_ready": True}


def test_identity_rotation_is_picked_up_by_receipts(client, supervisor_double) -> None:
    first = receipt_of(client, client.post("/v1/chat/completions", json=CHAT))
    supervisor_double.issuer.reissue(model_digest=bytes.fromhex(DIGEST))
    supervisor_double.publish()
    time.sleep(0.01)  # a distinct mtime is not needed (the inode changes), but be kind to slow fs
    second = receipt_of(client, client.post("/v1/chat/completions", json=CHAT))
    assert first["certificate_sha256"] != second["certificate_sha256"]
    assert second["certificate_sha256"] == supervisor_double.issuer.current().fingerprint.hex()


@settings(deadline=None)
@given(st.text(), st.text(), st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
       st.integers(min_value=100, max_value=599),
       st.sampled_from(["complete", "client_disconnected", "engine_failed"]))
def test_receipt_canonical_bytes_are_rfc8785(model: str, receipt_id: str, tokens, status: int,
                                             outcome: str) -> None:
    body = {"type": "appliance.receipt.v1", "id": receipt_id, "model": model, "model_digest": None,
            "usage": None if tokens is None else {"prompt_tokens": tokens, "total_tokens": tokens},
            "status": status, "outcome": outcome}
    try:
        expected = canonical_json(body)
    except ValueError:  # lone surrogates: neither encoder produces bytes
        with pytest.raises(UnicodeEncodeError):
            canonical_bytes(body)
        return
    assert canonical_bytes(body) == expected


def test_a_connection_that_attested_another_model_gets_421(client, supervisor_double) -> None:
    # The served model changed but this identity (the connection's) still carries the old digest.
    supervisor_double.status = supervisor_double.status | {"loaded_model_digest": "cd" * 32}
    supervisor_double.publish()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 421
    assert response.get_json()["error"]["code"] == "certificate_superseded"
    assert response.headers["Connection"] == "close"
