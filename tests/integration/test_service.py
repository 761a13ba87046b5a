"""The real service: `appliance serve --tee simulated` (supervisor + gunicorn over RA-TLS) with the
fake vLLM as its engine and model images packed by `appliance model pack`. Every request goes
through the ratls verifying client (DCAP against the simulated root, key binding), on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from cryptography import x509
from support.pinned import simulated_td_policy
from support.push_receiver import PushReceiver
from support.service import Service, pack_model, start_service, wait_for_status
from support.verifying import VerifyingClient, verifying_client

from appliance.supervisor.service import STATUS_PUSH_PURPOSE
from ratls.errors import IncompleteReceiptError, ReceiptError
from ratls.receipts import verify_receipt, verify_receipt_chain
from ratls.signing import verify_json

pytestmark = pytest.mark.slow

MODEL = "tiny"
OTHER = "other"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def images(work: Path) -> dict[str, object]:
    models, roothash, digest = pack_model(work, MODEL, {"config.json": '{"kind": "tiny"}'})
    _, _, other_digest = pack_model(work, OTHER, {"config.json": '{"kind": "other"}',
                                                  "nested/weights.bin": "x" * 10000})
    return {"models": models, "roothash": roothash, "digest": digest, "other_digest": other_digest}


@pytest.fixture(scope="module")
def service(work: Path, images) -> Iterator[Service]:
    service = start_service(work, images["models"], images["roothash"],
                            engine_env={"FAKE_VLLM_STREAM_DELAY": "0.05",
                                        # A leaky engine: prompts on its stdout.
                                        "FAKE_VLLM_LOG_PROMPTS": "1"})
    yield service
    assert service.stop() == 0, service.log()[-3000:]


@pytest.fixture(scope="module")
def client(service: Service, images) -> Iterator[VerifyingClient]:
    with verifying_client(service) as operator:
        load = operator.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
        assert load.status_code == 202, load.text
        wait_for_status(operator.http, lambda s: s["proxy_status"] == "ready")
        # The loaded model is answered only on connections that attested it. The operator's
        # connection attested "no model": the appliance answers 421 and closes it, and the
        # verifying client retries on a new connection, verifying the re-issued certificate first.
        before = operator.last_result().certificate.sha256_fingerprint
        assert operator.last_result().model_digest is None
        response = operator.http.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        after = operator.last_result()
        assert after.certificate.sha256_fingerprint != before
        assert after.verified and after.model_digest == images["digest"]
    with verifying_client(service) as client:
        yield client


def test_chat_through_the_openai_sdk_with_a_verified_receipt(
    client: VerifyingClient, images
) -> None:
    sdk = openai.OpenAI(base_url=client.base_url + "/v1", api_key="unused", http_client=client.http)
    raw = sdk.chat.completions.with_raw_response.create(**CHAT)
    completion = raw.parse()
    assert completion.usage.completion_tokens == 4
    receipt = client.receipt(raw.headers["x-receipt-id"])
    request_bytes = raw.http_response.request.content
    verify_receipt(receipt, request_bytes, raw.http_response.content, client.certificate())
    assert receipt["model_digest"] == images["digest"]
    assert (receipt["status"], receipt["outcome"]) == (200, "complete")
    assert client.last_result().verified and client.last_result().tee == "simulated"


def test_stream_events_arrive_before_the_stream_ends(client: VerifyingClient) -> None:
    body = json.dumps(CHAT | {"max_tokens": 12, "stream": True,
                              "stream_options": {"include_usage": True}}).encode()
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with client.http.stream("POST", "/v1/chat/completions", content=body,
                            headers={"Content-Type": "application/json"}) as response:
        assert response.status_code == 200
        receipt_id = response.headers["x-receipt-id"]  # announced before the body
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    sse = b"".join(chunk for _, chunk in arrivals)
    events = [e for e in sse.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" and len(events) >= 14
    # 0.05 s between events: the first ones must arrive long before the last (no buffering).
    assert len(arrivals) >= 10
    assert arrivals[0][0] < arrivals[-1][0] - 0.3
    verify_receipt(client.receipt(receipt_id), body, sse, client.certificate())
    assert client.receipt(receipt_id)["usage"]["completion_tokens"] == 12


def test_embeddings_and_models(client: VerifyingClient, images) -> None:
    response = client.http.post("/v1/embeddings", json={"model": MODEL, "input": "hello"})
    assert response.status_code == 200 and response.json()["data"][0]["embedding"]
    models = client.http.get("/v1/models").json()["data"]
    assert models == [{"id": MODEL, "object": "model", "owned_by": "appliance",
                       "digest": images["digest"]}]
    status = client.http.get("/v1/models/status").json()
    assert status["loaded_model_digest"] == images["digest"] and "engine_log_tail" not in status


def test_receipts_form_a_verifiable_chain(client: VerifyingClient) -> None:
    ids = []
    for _ in range(4):
        response = client.http.post(
            "/v1/completions", json={"model": MODEL, "prompt": "p", "max_tokens": 1}
        )
        ids.append(response.headers["x-receipt-id"])
    receipts = [client.receipt(i) for i in ids]
    certificate = client.certificate()
    verify_receipt_chain(receipts, {receipts[0]["certificate_sha256"]: certificate})


def test_lifecycle_needs_the_right_token(client: VerifyingClient, service: Service) -> None:
    missing = client.http.post("/v1/models/load", json={"model": MODEL})
    wrong = client.http.post("/v1/models/load", json={"model": MODEL},
                             headers={"Authorization": "Bearer wrong"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    operator = client.http.get("/v1/models/status", headers=service.auth()).json()
    assert isinstance(operator["engine_log_tail"], list)


def test_nonce_attestation(client: VerifyingClient, service: Service, images) -> None:
    with verifying_client(service, require_nonce=True) as fresh:
        assert fresh.http.get("/healthz").status_code == 200
        result = fresh.last_result()
        assert result.verified and result.binding.mode == "nonce"
        # The appliance's RTMR3 event log replays and its last model event is the loaded model.
        assert {c.name: c.outcome for c in result.checks}["rtmr3_event_log"] == "passed"
        assert measured_model(result) == ("passed", images["digest"])
        assert result.model_digest == images["digest"]


def test_malformed_requests_get_4xx_envelopes(client: VerifyingClient) -> None:
    cases = [
        ("POST", "/v1/chat/completions", b"{oops", 400),
        ("POST", "/v1/chat/completions", b'"a string"', 400),
        ("POST", "/v1/chat/completions", b'{"model": "nope", "messages": []}', 404),
        ("POST", "/v1/chat/completions", b'{"model": "tiny", "stream": 1}', 400),
        ("GET", "/v1/chat/completions", b"", 405),
        ("GET", "/v1/does-not-exist", b"", 404),
        ("DELETE", "/v1/models", b"", 405),
        ("POST", "/v1/models/load", b"{}", 401),
        ("GET", "/v1/attestation?nonce=zz", b"", 400),
        ("GET", "/v1/receipts/not-an-id", b"", 404),
    ]
    for method, path, body, status in cases:
        response = client.http.request(method, path, content=body,
                                       headers={"Content-Type": "application/json"})
        assert response.status_code == status, (method, path, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_deeply_nested_json_is_a_400_envelope_and_no_traceback(
        client: VerifyingClient, service: Service) -> None:
    bodies = [b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000]
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models/load"):
        for body in bodies:
            response = client.http.post(path, content=body, headers={
                "Content-Type": "application/json", **service.auth()})
            assert response.status_code == 400, (path, response.text)
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    log = service.log()
    assert "Traceback" not in log and "unhandled error" not in log


def test_refused_loads_change_nothing(client: VerifyingClient, service: Service, images) -> None:
    cases = [
        ({"model": "absent"}, 404, "model_not_found"),
        ({"model": "../tiny"}, 400, "invalid_model_name"),
        ({"model": OTHER, "digest": "00" * 32}, 409, "digest_mismatch"),
        ({"model": OTHER, "digest": "abc"}, 400, "invalid_digest"),
        ({"model": OTHER, "digest": ""}, 400, "invalid_digest"),
    ]
    for body, status, code in cases:
        response = client.http.post("/v1/models/load", json=body, headers=service.auth())
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    state = client.http.get("/v1/models/status").json()
    assert state["proxy_status"] == "ready" and state["loaded_model_digest"] == images["digest"]


def test_oversize_body_is_refused_before_it_is_sent(client: VerifyingClient) -> None:
    # A declared length over the limit is refused from the headers alone.
    response = client.http.post("/v1/chat/completions", content=b"x" * (4 * 1024 * 1024 + 1),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_client_disconnect_closes_the_upstream_request_and_the_receipt_says_so(
        client: VerifyingClient, service: Service) -> None:
    body = json.dumps(CHAT | {"max_tokens": 200, "stream": True}).encode()
    with client.http.stream("POST", "/v1/chat/completions", content=body,
                            headers={"Content-Type": "application/json"}) as response:
        receipt_id = response.headers["x-receipt-id"]
        chunks = response.iter_raw()
        received = next(chunks) + next(chunks)
    deadline = time.monotonic() + 10
    while True:
        status = client.http.get("/v1/models/status", headers=service.auth()).json()
        tail = status["engine_log_tail"]
        if any("client disconnected mid-stream" in line for line in tail):
            break
        assert time.monotonic() < deadline, "the engine never saw the proxy close the request"
        time.sleep(0.1)
    receipt = client.receipt(receipt_id)
    assert (receipt["status"], receipt["outcome"]) == (200, "client_disconnected")
    certificate = client.certificate()
    with pytest.raises(IncompleteReceiptError) as err:
        verify_receipt(receipt, body, received, certificate)
    assert (err.value.check, err.value.actual) == ("outcome", "client_disconnected")
    # Allowed, the receipt is genuine; its response hash covers what the appliance wrote before it
    # saw the disconnect, which may be more than this client read before closing.
    try:
        verify_receipt(receipt, body, received, certificate, allow_incomplete=True)
    except ReceiptError as error:
        assert error.check == "response_sha256", error


def test_logs_hold_no_prompts_completions_or_tokens(
    client: VerifyingClient, service: Service
) -> None:
    canary = "zebra-canary-prompt-7f3a"
    body = {"model": MODEL, "messages": [{"role": "user", "content": canary}], "max_tokens": 3}
    answer = client.http.post("/v1/chat/completions", json=body).json()
    client.http.post("/v1/chat/completions", json=body | {"stream": True}).read()
    completion = answer["choices"][0]["message"]["content"]
    time.sleep(0.5)  # let the engine's output reach the supervisor
    log = service.log()
    assert canary not in log and completion not in log
    assert service.load_token not in log
    # The engine did print it: it is in the operator-only engine log tail, not in the logs.
    tail = client.http.get("/v1/models/status", headers=service.auth()).json()["engine_log_tail"]
    assert any(canary in line for line in tail)


def test_metrics_aggregate_across_workers(client: VerifyingClient, service: Service) -> None:
    for _ in range(6):
        client.http.post("/v1/chat/completions", json=CHAT)
    client.http.post("/v1/chat/completions", json=CHAT | {"stream": True}).read()
    assert client.http.get("/metrics").status_code == 401
    text = client.http.get("/metrics", headers=service.auth()).text
    line = next(
        candidate
        for candidate in text.splitlines()
        if candidate.startswith(
            'appliance_http_requests_total{route="/v1/chat/completions",status="200"}'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) >= 6
    assert 'appliance_lifecycle_state{state="ready"} 1.0' in text
    assert "appliance_relayed_events_total" in text


def test_load_replaces_the_model_and_reissues_the_certificate(service: Service, images) -> None:
    """Certificate re-issued on load and unload: the fingerprint changes, MODEL_DIGEST follows."""
    with verifying_client(service) as first:
        before = first.last_result_after(lambda: first.http.get("/healthz"))
        assert before.model_digest == images["digest"]
        first.http.post("/v1/models/unload", json={"model": MODEL}, headers=service.auth())
        wait_for_status(first.http, lambda s: s["proxy_status"] == "idle")
        assert first.http.post("/v1/chat/completions", json=CHAT).status_code == 503
    # Nonce mode from here on, so that the RTMR3 event log is checked against the certificate.
    with verifying_client(service, require_nonce=True) as second:
        idle = second.last_result_after(lambda: second.http.get("/healthz"))
        assert idle.model_digest is None
        # An unload measures nothing: the log still ends with the unloaded model.
        assert measured_model(idle) == ("not_applicable", images["digest"])
        assert idle.certificate.sha256_fingerprint != before.certificate.sha256_fingerprint
        second.http.post("/v1/models/load", json={"model": OTHER}, headers=service.auth())
        wait_for_status(second.http, lambda s: s["proxy_status"] == "ready")
    with verifying_client(service, require_nonce=True) as third:
        loaded = third.last_result_after(lambda: third.http.get("/healthz"))
        assert loaded.model_digest == images["other_digest"]
        assert measured_model(loaded) == ("passed", images["other_digest"])
        assert loaded.certificate.sha256_fingerprint not in (
            before.certificate.sha256_fingerprint,
            idle.certificate.sha256_fingerprint,
        )
        third.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
        wait_for_status(third.http, lambda s: s["proxy_status"] == "ready"
                        and s["loaded_model"] == MODEL)


def measured_model(result) -> tuple[str, str | None]:
    """The outcome of the check that RTMR3's last model event is the certificate's model."""
    check = next(c for c in result.checks if c.name == "rtmr3_model_digest")
    return check.outcome, check.actual


def test_concurrent_load_is_a_conflict(work: Path, images) -> None:
    service = start_service(work, images["models"], images["roothash"],
                            engine_env={"FAKE_VLLM_START_DELAY": "1.5"})
    try:
        with verifying_client(service) as client:
            first = client.http.post(
                "/v1/models/load", json={"model": MODEL}, headers=service.auth()
            )
            second = client.http.post(
                "/v1/models/load", json={"model": OTHER}, headers=service.auth()
            )
            assert first.status_code == 202
            assert second.status_code == 409
            assert second.json()["error"]["code"] == "lifecycle_busy"
            wait_for_status(client.http, lambda s: s["proxy_status"] == "ready")
    finally:
        assert service.stop() == 0


def test_engine_killed_gives_503_then_recovers(work: Path, images) -> None:
    service = start_service(work, images["models"], images["roothash"])
    try:
        with verifying_client(service) as operator:
            operator.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
            wait_for_status(operator.http, lambda s: s["proxy_status"] == "ready")
        with verifying_client(service) as client:
            assert client.http.post("/v1/chat/completions", json=CHAT).status_code == 200
            os.kill(service.engine_pids()[-1], signal.SIGKILL)
            statuses = set()
            deadline = time.monotonic() + 30
            while True:
                code = client.http.post("/v1/chat/completions", json=CHAT).status_code
                statuses.add(code)
                if code == 200 and 503 in statuses:
                    break
                assert time.monotonic() < deadline, f"no recovery: saw {statuses}"
                time.sleep(0.05)
            assert statuses <= {200, 502, 503}
            assert len(service.engine_pids()) == 2  # restarted once by the supervision policy
    finally:
        assert service.stop() == 0
        for pid in service.engine_pids():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_status_pushes_are_signed_and_resume_after_failures(work: Path, images) -> None:
    receiver = PushReceiver(fail_first=3)
    service = start_service(
        work, images["models"], images["roothash"],
        env={"APPLIANCE_MANAGEMENT_TOKEN": "mgmt-secret"},
        args=["--management-url", receiver.url, "--insecure-management-http",
              "--push-interval", "0.5", "--enclave-id", "e-1"],
    )
    try:
        with verifying_client(service) as client:
            client.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
            deadline = time.monotonic() + 30
            while not any(
                doc["payload"]["proxy_status"] == "ready" for _, _, doc in receiver.received
            ):
                assert time.monotonic() < deadline, f"no ready push; {receiver.calls} calls"
                time.sleep(0.1)
            assert receiver.calls > 3  # the first pushes failed, and pushing resumed
        path, authorization, document = receiver.received[-1]
        assert path == "/api/v1/enclave/runtime-status"
        with verifying_client(service) as client:
            client.http.get("/healthz")
            assert authorization == "Bearer mgmt-secret"
            certificate = x509.load_pem_x509_certificate(document.pop("certificate_pem").encode())
            payload = verify_json(document, purpose=STATUS_PUSH_PURPOSE, certificate=certificate)
            assert payload["enclave_id"] == "e-1" and payload["loaded_model"] == MODEL
            # The signing certificate is the attested one the API serves.
            assert (
                document["certificate_sha256"]
                == client.last_result().certificate.sha256_fingerprint
            )
            assert "mgmt-secret" not in service.log()
            assert "integration-load-token" not in service.log()
    finally:
        assert service.stop() == 0
        receiver.close()


def test_lifecycle_closed_without_a_token(work: Path, images) -> None:
    service = start_service(work, images["models"], images["roothash"], load_token=None)
    try:
        with verifying_client(service) as client:
            response = client.http.post("/v1/models/load", json={"model": MODEL},
                                        headers={"Authorization": "Bearer anything"})
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "lifecycle_closed"
    finally:
        assert service.stop() == 0


def test_sigterm_stops_everything(work: Path, images) -> None:
    service = start_service(work, images["models"], images["roothash"])
    with verifying_client(service) as client:
        client.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
        wait_for_status(client.http, lambda s: s["proxy_status"] == "ready")
    assert service.stop() == 0
    engine = service.engine_pids()[-1]
    with pytest.raises(ProcessLookupError):
        os.killpg(engine, 0)  # the engine's whole process group is gone


def test_portal_attests_an_app_server_side(service: Service, client: VerifyingClient, work: Path,
                                           images) -> None:
    from datetime import UTC, datetime

    from appliance.portal.app import PortalConfig, create_portal_app
    from attest.simulated import SimulatedAuthority

    def clock() -> datetime:
        return datetime.now(UTC)

    config = PortalConfig(apps={"demo": service.url}, policy=simulated_td_policy(),
                          sim_root=service.sim_root)
    portal = create_portal_app(config, clock=clock).test_client()
    result = portal.get("/api/v1/apps/demo/attest")
    assert result.status_code == 200
    document = result.get_json()
    assert document["verified"] is True and document["tee"] == "simulated"
    assert document["model_digest"] == images["digest"] and document["binding"]["mode"] == "nonce"

    # The tenant's challenge is the nonce the fresh quote binds; a bad one is a 400 envelope.
    challenge = bytes(range(32)).hex()
    answered = portal.get(f"/api/v1/apps/demo/attest?challenge={challenge}").get_json()
    assert answered["verified"] is True and answered["binding"]["nonce"] == challenge
    bad = portal.get("/api/v1/apps/demo/attest?challenge=abcd")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_challenge"

    # Evidence that does not chain to the root the portal trusts: 200, verified false, errors.
    other = SimulatedAuthority.create(work / "other-authority", now=clock())
    stranger = PortalConfig(apps={"demo": service.url}, policy=simulated_td_policy(),
                            sim_root=other.directory / "root-ca.pem")
    refused = create_portal_app(stranger, clock=clock).test_client().get("/api/v1/apps/demo/attest")
    assert refused.status_code == 200
    assert refused.get_json()["verified"] is False and refused.get_json()["errors"]

    # A portal whose policy pins nothing refuses, simulated evidence included.
    from ratls.policy import AppraisalPolicy

    unpinned = PortalConfig(apps={"demo": service.url}, policy=AppraisalPolicy(),
                            sim_root=service.sim_root)
    answer = create_portal_app(unpinned, clock=clock).test_client().get("/api/v1/apps/demo/attest")
    assert answer.get_json()["verified"] is False
    assert answer.get_json()["errors"][0]["check"] == "measurements_pinned"

    missing = portal.get("/api/v1/apps/nope/attest")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "app_not_found"


def test_the_log_names_the_listener_as_what_it_is(service: Service) -> None:
    log = service.log()
    assert f"Listening at: https://127.0.0.1:{service.port}" in log
    assert "Listening at: http://" not in log
