"""Receipts: sign/verify round trip, every field mutation rejected by name, incomplete responses
refused unless allowed, hash-chain breaks."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures

from ratls.errors import IncompleteReceiptError, ReceiptChainError, ReceiptError
from ratls.issuer import Identity, IdentityIssuer
from ratls.receipts import (
    Receipt,
    ReceiptBody,
    Usage,
    format_time,
    parse_receipt,
    sign_receipt,
    verify_receipt,
    verify_receipt_chain,
)

DIGEST = bytes.fromhex("5e" * 32)
REQUEST = b'{"model":"qwen","messages":[{"role":"user","content":"hi"}]}'
RESPONSE = b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\ndata: [DONE]\n\n'


@pytest.fixture
def identity(provider, names, clock) -> Identity:
    issuer = IdentityIssuer(provider, names, clock=clock)
    return issuer.reissue(model_digest=DIGEST)


def seal(
    identity: Identity,
    *,
    previous: str | None = None,
    request=REQUEST,
    response=RESPONSE,
    number: int = 1,
    status: int = 200,
    outcome: str = "complete",
) -> Receipt:
    body = ReceiptBody(
        id=f"chatcmpl-{number}",
        time=format_time(datetime(2026, 3, 1, 12, 0, number, tzinfo=UTC)),
        model="qwen",
        model_digest=identity.model_digest.hex() if identity.model_digest else None,
        request_sha256=hashlib.sha256(request).hexdigest(),
        response_sha256=hashlib.sha256(response).hexdigest(),
        usage=Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
        status=status,
        outcome=outcome,
        certificate_sha256=identity.fingerprint.hex(),
        previous_receipt_sha256=previous,
    )
    return sign_receipt(
        body, private_key=identity.private_key, certificate=identity.certificate.certificate
    )


def test_round_trip_through_json(identity) -> None:
    receipt = seal(identity)
    text = receipt.model_dump_json()
    assert verify_receipt(text, REQUEST, RESPONSE, identity.certificate.certificate) == receipt
    assert verify_receipt(json.loads(text), REQUEST, RESPONSE, identity.certificate.certificate)
    assert json.loads(text)["type"] == "appliance.receipt.v1"
    assert len(receipt.signature) == 128


def test_receipt_holds_no_request_or_response_text(identity) -> None:
    text = seal(identity).model_dump_json()
    assert "hi" not in json.loads(text).values()
    assert "Hello" not in text


# Each field, a changed value, and the check that must name the mismatch.
MUTATIONS = {
    "id": ("chatcmpl-999", "receipt_sha256"),
    "time": ("2026-03-01T12:00:09Z", "receipt_sha256"),
    "model": ("llama", "receipt_sha256"),
    "model_digest": ("ff" * 32, "model_digest"),
    "request_sha256": ("00" * 32, "request_sha256"),
    "response_sha256": ("00" * 32, "receipt_sha256"),  # other response bytes: see below
    "usage": ({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}, "receipt_sha256"),
    "status": (400, "receipt_sha256"),
    "outcome": ("client_disconnected", "receipt_sha256"),
    "certificate_sha256": ("11" * 32, "certificate_sha256"),
    "previous_receipt_sha256": ("22" * 32, "receipt_sha256"),
    "receipt_sha256": ("33" * 32, "receipt_sha256"),
    "signature": ("44" * 64, "signature"),
    "type": ("appliance.receipt.v2", "type"),
}


def test_mutations_cover_every_field() -> None:
    assert set(MUTATIONS) == set(Receipt.model_fields)


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_every_field_mutation_is_rejected_by_name(identity, field) -> None:
    value, check = MUTATIONS[field]
    data = json.loads(seal(identity).model_dump_json())
    data[field] = value
    with pytest.raises(ReceiptError) as err:
        verify_receipt(data, REQUEST, RESPONSE, identity.certificate.certificate)
    assert err.value.check == check


def test_a_mutation_with_a_recomputed_hash_fails_on_the_signature(identity) -> None:
    receipt = seal(identity)
    body = receipt.body().model_copy(update={"id": "forged"})
    forged = receipt.model_copy(
        update={"id": "forged", "receipt_sha256": hashlib.sha256(body.canonical()).hexdigest()}
    )
    with pytest.raises(ReceiptError) as err:
        verify_receipt(forged, REQUEST, RESPONSE, identity.certificate.certificate)
    assert err.value.check == "signature"


def test_other_request_or_response_bytes_are_named(identity) -> None:
    receipt = seal(identity)
    cert = identity.certificate.certificate
    with pytest.raises(ReceiptError) as err:
        verify_receipt(receipt, REQUEST + b" ", RESPONSE, cert)
    assert (err.value.check, err.value.actual) == ("request_sha256", receipt.request_sha256)
    with pytest.raises(ReceiptError) as err:
        verify_receipt(receipt, REQUEST, RESPONSE[:-1], cert)
    assert err.value.check == "response_sha256"


def test_a_receipt_under_another_certificate_is_rejected(identity, provider, names, clock) -> None:
    other = IdentityIssuer(provider, names, clock=clock).reissue(model_digest=DIGEST)
    with pytest.raises(ReceiptError) as err:
        verify_receipt(seal(identity), REQUEST, RESPONSE, other.certificate.certificate)
    assert err.value.check == "certificate_sha256"


def test_sign_refuses_a_body_naming_another_certificate(identity, provider, names, clock) -> None:
    other = IdentityIssuer(provider, names, clock=clock).current()
    body = seal(identity).body()
    with pytest.raises(ValueError):
        sign_receipt(body, private_key=other.private_key, certificate=other.certificate.certificate)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("usage", {"prompt_tokens": -1, "total_tokens": 0}),
        ("time", "2026-03-01 12:00:00"),
        ("request_sha256", "AB" * 32),
        ("model_digest", "ab"),
        ("unknown", 1),
        ("id", ""),
        ("status", 99),
        ("status", 600),
        ("status", "200"),
        ("outcome", "completed"),
        ("outcome", None),
    ],
)
def test_malformed_receipts_are_named(identity, field, value) -> None:
    data = json.loads(seal(identity).model_dump_json())
    data[field] = value
    with pytest.raises(ReceiptError) as err:
        parse_receipt(data)
    assert err.value.check.split(".")[0] == field


@pytest.mark.parametrize("outcome", ["client_disconnected", "engine_failed"])
def test_an_incomplete_receipt_is_refused_unless_allowed(identity, outcome) -> None:
    receipt = seal(identity, outcome=outcome)
    cert = identity.certificate.certificate
    with pytest.raises(IncompleteReceiptError) as err:
        verify_receipt(receipt.model_dump_json(), REQUEST, RESPONSE, cert)
    assert (err.value.check, err.value.actual) == ("outcome", outcome)
    assert err.value.expected == "complete"
    assert outcome in str(err.value)
    assert verify_receipt(receipt, REQUEST, RESPONSE, cert, allow_incomplete=True) == receipt
    # Refused as incomplete even with fewer bytes than it covers (a client that went away).
    with pytest.raises(IncompleteReceiptError):
        verify_receipt(receipt, REQUEST, RESPONSE[:-1], cert)
    # Allowing an incomplete receipt still binds the response bytes.
    with pytest.raises(ReceiptError) as err:
        verify_receipt(receipt, REQUEST, RESPONSE[:-1], cert, allow_incomplete=True)
    assert err.value.check == "response_sha256"


@pytest.mark.parametrize(("made_with", "forged"), [
    ({"outcome": "client_disconnected"}, {"outcome": "complete"}),
    ({"outcome": "engine_failed"}, {"outcome": "complete"}),
    ({"outcome": "complete"}, {"outcome": "engine_failed"}),
    ({"status": 400}, {"status": 200}),
    ({"status": 200}, {"status": 503}),
])
def test_flipping_outcome_or_status_breaks_the_signature(identity, made_with, forged) -> None:
    # The forger recomputes receipt_sha256 so the hash check passes; the signature cannot follow.
    receipt = seal(identity, **made_with)
    body = receipt.body().model_copy(update=forged)
    tampered = receipt.model_copy(
        update={**forged, "receipt_sha256": hashlib.sha256(body.canonical()).hexdigest()}
    )
    with pytest.raises(ReceiptError) as err:
        verify_receipt(tampered, REQUEST, RESPONSE, identity.certificate.certificate,
                       allow_incomplete=True)
    assert err.value.check == "signature"
    assert not isinstance(err.value, IncompleteReceiptError)


def chain(identity: Identity, length: int) -> list[Receipt]:
    receipts: list[Receipt] = []
    for number in range(length):
        previous = receipts[-1].receipt_sha256 if receipts else None
        outcome = "client_disconnected" if number == 1 else "complete"
        receipts.append(seal(identity, previous=previous, number=number, outcome=outcome))
    return receipts


def test_chain_verifies_from_start_and_as_a_segment(identity) -> None:
    receipts = chain(identity, 5)
    certificates = {identity.fingerprint.hex(): identity.certificate.certificate}
    verify_receipt_chain(receipts, certificates, from_start=True)
    verify_receipt_chain(receipts[2:], certificates)
    verify_receipt_chain(receipts[2:], certificates, first_previous=receipts[1].receipt_sha256)
    with pytest.raises(ReceiptChainError) as err:
        verify_receipt_chain(receipts[2:], certificates, from_start=True)
    assert (err.value.index, err.value.check) == (0, "previous_receipt_sha256")


@pytest.mark.parametrize("break_at", [1, 2, 3])
def test_chain_breaks_are_detected(identity, break_at) -> None:
    receipts = chain(identity, 5)
    certificates = {identity.fingerprint.hex(): identity.certificate.certificate}
    dropped = receipts[:break_at] + receipts[break_at + 1 :]
    with pytest.raises(ReceiptChainError) as err:
        verify_receipt_chain(dropped, certificates, from_start=True)
    assert (err.value.index, err.value.check) == (break_at, "previous_receipt_sha256")
    swapped = list(receipts)
    swapped[break_at - 1], swapped[break_at] = swapped[break_at], swapped[break_at - 1]
    with pytest.raises(ReceiptChainError):
        verify_receipt_chain(swapped, certificates, from_start=True)


def test_chain_with_a_tampered_receipt_or_unknown_certificate_fails(identity) -> None:
    receipts = chain(identity, 3)
    certificates = {identity.fingerprint.hex(): identity.certificate.certificate}
    tampered = receipts[1].model_copy(update={"model": "other"})
    with pytest.raises(ReceiptChainError) as err:
        verify_receipt_chain([receipts[0], tampered, receipts[2]], certificates)
    assert (err.value.index, err.value.check) == (1, "receipt_sha256")
    with pytest.raises(ReceiptChainError) as err:
        verify_receipt_chain(receipts, {})
    assert (err.value.index, err.value.check) == (0, "certificate_sha256")


def test_chain_spans_certificate_rotation(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.reissue(model_digest=DIGEST)
    a = seal(first, number=1)
    second = issuer.reissue(model_digest=DIGEST)
    b = seal(second, previous=a.receipt_sha256, number=2)
    certificates = {i.fingerprint.hex(): i.certificate.certificate for i in (first, second)}
    verify_receipt_chain([a, b], certificates, from_start=True)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000), st.binary(max_size=2000), st.integers(100, 599),
       st.sampled_from(["complete", "client_disconnected", "engine_failed"]))
def test_any_request_and_response_bytes_round_trip(
    identity, request_bytes, response_bytes, status, outcome
) -> None:
    receipt = seal(identity, request=request_bytes, response=response_bytes, status=status,
                   outcome=outcome)
    text = receipt.model_dump_json()
    cert = identity.certificate.certificate
    verified = verify_receipt(text, request_bytes, response_bytes, cert, allow_incomplete=True)
    assert (verified.status, verified.outcome) == (status, outcome)
