"""The worker's ASGI app, wired by `build_worker`, against the fake vLLM (a real process).

Streaming through gunicorn, uvicorn and TLS is covered by tests/integration; here the app's
routing (native inference, the rest through the WSGI bridge to Flask), validation, pass-through,
receipts and error envelopes are checked in process with httpx's ASGI transport.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.worker_app import (
    DIGEST,
    LOAD_TOKEN,
    MODEL,
    AsgiClient,
    SupervisorDouble,
    start_fake_engine,
    stop_engine,
)

from appliance.settings import Settings
from appliance.worker.proxy import RECEIPT_HEADER
from appliance.worker.receipts import canonical_bytes
from appliance.worker.server import build_worker
from appliance.worker.wsgi_bridge import TLS_CONNECTION_ENVIRON, wsgi_environ
from ratls.errors import IncompleteReceiptError
from ratls.receipts import verify_receipt
from ratls.signing import canonical_json

JSON = {"Content-Type": "application/json"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5}


@contextmanager
def worker_client(settings: Settings) -> Iterator[AsgiClient]:
    app, _tls = build_worker(settings)
    client = AsgiClient(app)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def client(supervisor_double: SupervisorDouble) -> Iterator[AsgiClient]:
    with worker_client(supervisor_double.settings) as client:
        yield client


def receipt_of(client, response) -> dict:
    receipt = client.get(f"/v1/receipts/{response.headers[RECEIPT_HEADER]}")
    assert receipt.status_code == 200
    return receipt.json()


def test_chat_is_passed_through_byte_for_byte_with_a_verifiable_receipt(
        client, supervisor_double: SupervisorDouble) -> None:
    # Unusual but valid JSON formatting must reach the engine unchanged (hash in the receipt).
    body = (
        b'{ "model":"tiny",\n '
        b'"messages":[{"role":"user","content":"Hello \\u00e9"}], "max_tokens":5 }'
    )
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert response.status_code == 200, response.content
    assert response.json()["usage"]["completion_tokens"] == 5
    receipt = receipt_of(client, response)
    certificate = supervisor_double.issuer.current().certificate.certificate
    verify_receipt(receipt, body, response.content, certificate)
    assert receipt["usage"]["completion_tokens"] == 5
    assert receipt["model"] == MODEL and receipt["model_digest"] == DIGEST
    assert (receipt["status"], receipt["outcome"]) == (200, "complete")


def test_stream_is_relayed_with_usage_and_a_receipt_over_the_whole_sse_body(
        client, supervisor_double: SupervisorDouble) -> None:
    body = json.dumps(CHAT | {"stream": True, "stream_options": {"include_usage": True}}).encode()
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    sse = response.content
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
    settings = supervisor_double.settings.model_copy(update={"vllm_port": engine.port})
    body = json.dumps(CHAT | {"stream": True}).encode()
    try:
        with worker_client(settings) as client:
            sent, _seconds = client.exchange("/v1/chat/completions", body)
            start, *parts = sent
            headers = dict(start["headers"])
            receipt = client.get(f"/v1/receipts/{headers[b'x-receipt-id'].decode()}").json()
            metrics = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"})
    finally:
        stop_engine(engine)
    assert start["status"] == 200
    # No final body message: the server ends the connection without the terminating chunk.
    assert all(part["more_body"] for part in parts)
    sse = b"".join(part["body"] for part in parts)
    assert sse.count(b"data: ") == 2 and b"[DONE]" not in sse
    assert (receipt["status"], receipt["outcome"]) == (200, "engine_failed")
    certificate = supervisor_double.issuer.current().certificate.certificate
    with pytest.raises(IncompleteReceiptError) as err:
        verify_receipt(receipt, body, sse, certificate)
    assert err.value.actual == "engine_failed"
    # The client holds every byte the appliance sent: allowed, the receipt binds them.
    verify_receipt(receipt, body, sse, certificate, allow_incomplete=True)
    assert ('appliance_streams_finished_total{outcome="engine_failed",'
            'route="/v1/chat/completions"} 1.0') in metrics.text


def test_receipts_chain(client) -> None:
    hashes = []
    for _ in range(3):
        response = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}
        )
        hashes.append(receipt_of(client, response))
    assert hashes[1]["previous_receipt_sha256"] == hashes[0]["receipt_sha256"]
    assert hashes[2]["previous_receipt_sha256"] == hashes[1]["receipt_sha256"]


def test_embeddings_and_engine_errors_pass_through(client) -> None:
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    # The engine's own 400 (vLLM's envelope) is relayed as is, with a receipt.
    bad = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": -1})
    assert bad.status_code == 400 and "error" in bad.json()
    bad_receipt = receipt_of(client, bad)
    assert (bad_receipt["status"], bad_receipt["outcome"]) == (400, "complete")


@pytest.mark.parametrize("fake_engine", [{"pooling": 1}], indirect=True)
def test_an_engine_answer_outside_the_envelope_is_wrapped_in_it(client) -> None:
    # vLLM serving an embedding model has no chat route: FastAPI's {"detail": "Not Found"}.
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {
        "message": "the engine answered 404: Not Found", "type": "not_found_error",
        "param": None, "code": "engine_error",
    }}
    receipt = receipt_of(client, response)  # the receipt covers the bytes the client got
    assert receipt["status"] == 404
    assert receipt["response_sha256"] == hashlib.sha256(response.content).hexdigest()
    embedded = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a"]})
    assert embedded.status_code == 200, embedded.text


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
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_oversize_body_is_413_before_reading(client) -> None:
    response = client.post("/v1/chat/completions", content=b"x" * (64 * 1024 + 1), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_unknown_paths_and_methods(client) -> None:
    missing = client.get("/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_route"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert wrong.json()["error"]["type"] == "invalid_request_error"


def test_no_model_ready_is_503_and_models_is_empty(
    client, supervisor_double: SupervisorDouble
) -> None:
    supervisor_double.status = {"proxy_status": "loading", "loaded_model": None}
    supervisor_double.publish()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"
    assert client.get("/v1/models").json()["data"] == []


def test_models_lists_the_served_model_with_its_digest(client) -> None:
    data = client.get("/v1/models").json()["data"]
    assert data == [{"id": MODEL, "object": "model", "owned_by": "appliance", "digest": DIGEST}]


def test_engine_down_is_502(client, fake_engine) -> None:
    fake_engine.process.kill()
    fake_engine.process.wait()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


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
        assert response.json()["proxy_status"] == "loading"
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
        with worker_client(closed) as client:
            response = client.post("/v1/models/load", json={"model": MODEL},
                                   headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "lifecycle_closed"
        open_ = closed.model_copy(update={"insecure_open_lifecycle": True})
        with worker_client(open_) as client:
            assert client.post("/v1/models/load", json={"model": MODEL}).status_code == 202

    def test_status_is_public_but_the_engine_log_needs_the_token(self, client) -> None:
        public = client.get("/v1/models/status").json()
        assert public["proxy_status"] == "ready" and "engine_log_tail" not in public
        operator = client.get("/v1/models/status",
                              headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).json()
        assert operator["engine_log_tail"] == ["line"]


def test_attestation_validates_the_nonce_before_the_supervisor(client, supervisor_double) -> None:
    answer = client.get("/v1/attestation?nonce=" + "AB" * 16).json()
    assert answer["nonce"] == "ab" * 16
    # The supervisor is told which certificate the connection presented, to bind it.
    assert answer["certificate_der"] == supervisor_double.issuer.current().certificate.der.hex()
    for bad in ("", "xyz", "abc"):
        response = client.get(f"/v1/attestation?nonce={bad}")
        assert response.status_code == 400 and response.json()["error"]["param"] == "nonce"
    assert client.get("/v1/attestation/collateral").json() == {"bundle": "collateral"}


def test_unknown_receipt_is_404(client) -> None:
    assert client.get("/v1/receipts/" + "0" * 32).status_code == 404
    assert client.get("/v1/receipts/../../etc").status_code == 404


def test_metrics_and_health(client) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    _ = client.post("/v1/chat/completions", json=CHAT | {"stream": True}).content
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).text
    assert 'appliance_http_requests_total{route="/v1/chat/completions",status="200"} 2.0' in text
    assert (
        'appliance_streams_finished_total{outcome="complete",route="/v1/chat/completions"} 1.0'
        in text
    )
    assert "appliance_relayed_events_total" in text
    assert client.get("/healthz").json() == {"status": "ok", "model_ready": True}


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
    assert response.json()["error"]["code"] == "certificate_superseded"
    assert response.headers["Connection"] == "close"


def test_a_client_gone_mid_stream_ends_the_engine_request(client, fake_engine) -> None:
    body = json.dumps(CHAT | {"max_tokens": 500, "stream": True}).encode()  # 5 s of events
    sent, seconds = client.exchange("/v1/chat/completions", body, disconnect_after=0.3)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert 1 < len(sent) < 100 and seconds < 2
    receipt_id = dict(sent[0]["headers"])[b"x-receipt-id"].decode()
    receipt = client.get(f"/v1/receipts/{receipt_id}").json()
    assert (receipt["status"], receipt["outcome"]) == (200, "client_disconnected")
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).text
    assert ('appliance_streams_finished_total{outcome="client_disconnected",'
            'route="/v1/chat/completions"} 1.0') in metrics
    deadline = time.monotonic() + 5
    while "client disconnected mid-stream" not in fake_engine.output():
        assert time.monotonic() < deadline, "the engine never saw the request end"
        time.sleep(0.05)


@pytest.mark.parametrize("fake_engine", [{"response_delay": 5}], indirect=True)
def test_a_client_gone_before_the_engine_answers_ends_the_request(client) -> None:
    sent, seconds = client.exchange("/v1/chat/completions", json.dumps(CHAT).encode(),
                                    disconnect_after=0.3)
    assert sent == [] and seconds < 2  # not the engine's 5 s: the request was dropped
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {LOAD_TOKEN}"}).text
    assert "appliance_receipts_total 0.0" in metrics


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models/load"])
def test_a_chunked_body_is_stopped_at_the_limit(client, path: str) -> None:
    sent = []

    async def body():  # no Content-Length: chunked, 40 KiB at a time, 160 KiB in all
        for _ in range(4):
            sent.append(1)
            yield b"x" * 40 * 1024

    response = client.post(
        path, content=body(), headers=JSON | {"Authorization": f"Bearer {LOAD_TOKEN}"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert response.headers["Connection"] == "close"
    assert len(sent) == 2  # refused once past the 64 KiB limit, not after reading it all


def test_the_wsgi_environ_of_a_request() -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/caf\u00e9",
             "query_string": b"a=1&b=%20",
             "root_path": "", "http_version": "1.1", "scheme": "https",
             "server": ("appliance.test", 8443), "client": ("127.0.0.1", 50000),
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"),
                         (b"x-tag", b"a"), (b"x-tag", b"b"), (b"x_tag", b"smuggled"),
                         (b"authorization", b"Bearer t")]}
    environ = wsgi_environ(scope, b'{"a": 1}')
    assert environ["PATH_INFO"] == "/v1/caf\u00e9".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_LENGTH"] == "8" and environ["wsgi.input"].read() == b'{"a": 1}'
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_TRANSFER_ENCODING" not in environ  # the body was de-chunked and read in full
    assert environ["HTTP_X_TAG"] == "a,b"  # the underscore spelling is dropped, not merged
    assert environ["HTTP_AUTHORIZATION"] == "Bearer t"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("appliance.test", "8443")
    assert TLS_CONNECTION_ENVIRON not in environ  # no TLS in this scope


class _ResumedTls:
    """The TLS object of a connection that resumed a session (no certificate was presented)."""

    session_reused = True


@pytest.mark.parametrize("method, path", [("POST", "/v1/chat/completions"), ("GET", "/healthz"),
                                          ("GET", "/v1/attestation?nonce=ab")])
def test_a_resumed_tls_session_gets_421_and_the_connection_is_closed(
        client, method: str, path: str) -> None:
    sent, _ = client.exchange(path.split("?")[0], json.dumps(CHAT).encode(), method=method,
                              extensions={"ratls": {"ssl_object": _ResumedTls()}})
    start, body = sent
    assert start["status"] == 421
    assert (b"connection", b"close") in start["headers"]
    error = json.loads(body["body"])["error"]
    assert error["code"] == "tls_session_resumed" and error["type"] == "invalid_request_error"


DEEP_BODIES = {"arrays": b"[" * 1000 + b"]" * 1000,
               "objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
               "inside": b'{"model": "tiny", "messages": ' + b"[" * 3000 + b"]" * 3000 + b"}"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/models/load"])
@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
def test_deeply_nested_json_is_a_400_envelope_without_a_traceback(
        client, path: str, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    response = client.post(path, content=body,
                           headers=JSON | {"Authorization": f"Bearer {LOAD_TOKEN}"})
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


@pytest.mark.parametrize("body, fields", [
    # Over the size parsed on the loop: checked by the off-loop scan, same answers.
    (json.dumps(CHAT | {"padding": "x" * 20000, "stream": True}).encode(), 200),
    (json.dumps({"padding": "x" * 20000, "model": "other"}).encode(), 404),
    (json.dumps({"padding": "x" * 20000, "model": MODEL, "stream": "yes"}).encode(), 400),
    (b'{"model": "tiny", "padding": "' + b"x" * 20000 + b'"', 400),
])
def test_large_bodies_get_the_same_routing_checks(client, body: bytes, fields: int) -> None:
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert response.status_code == fields, response.text


def test_attestation_is_rate_limited_per_worker(supervisor_double: SupervisorDouble) -> None:
    limited = supervisor_double.settings.model_copy(
        update={"attestation_rate": 0.2, "attestation_burst": 2})
    with worker_client(limited) as client:
        answers = [client.get("/v1/attestation?nonce=" + "ab" * 16) for _ in range(3)]
        # A refused nonce costs no token: it never reaches the supervisor.
        assert client.get("/v1/attestation?nonce=zz").status_code == 400
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 5
