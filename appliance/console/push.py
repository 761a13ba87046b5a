"""A pushed status document: parsed (its structure), then its signature verified. No I/O.

The document is a ratls signed JSON document plus the signer's certificate
(`appliance/status_push.py`). Parsing reads only what the console routes on: the enclave id, the
time and the certificate; the rest of the payload passes through as the appliance wrote it.
Until `verify_signature` has passed, nothing read here is trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from appliance.console.errors import BadSignature, MalformedPush, UnsignedPush
from appliance.status_push import CERTIFICATE_MEMBER, STATUS_PUSH_PURPOSE
from ratls.errors import SignatureError
from ratls.signing import verify_json

SIGNED_MEMBERS = frozenset({"purpose", "payload", "certificate_sha256", "signature"})
# Without either there is nothing to verify: the push is unsigned, whatever else it has.
SIGNATURE_MEMBERS = frozenset({"signature", CERTIFICATE_MEMBER})


@dataclass(frozen=True)
class SignedPush:
    enclave_id: str
    time: datetime  # aware, UTC
    payload: Mapping[str, Any] = field(repr=False)
    signed: Mapping[str, Any] = field(repr=False)  # the signed members, as received
    certificate: x509.Certificate = field(repr=False)


def parse_document(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Raises MalformedPush."""
    try:
        document = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise MalformedPush(f"body is not JSON: {exc}", check="json") from None
    if not isinstance(document, dict):
        raise MalformedPush("body is not a JSON object", check="json",
                            actual=type(document).__name__)
    return document


def claimed_enclave_id(document: Mapping[str, Any]) -> str | None:
    """The enclave id the push claims (unverified: it only says which enclave's policy and
    counters apply). An unsigned status carries it at the top level."""
    payload = document.get("payload")
    claimed = (payload if isinstance(payload, Mapping) else document).get("enclave_id")
    return claimed if isinstance(claimed, str) and claimed else None


def signed_push(document: Mapping[str, Any]) -> SignedPush:
    """The signed status document's parts. Raises UnsignedPush or MalformedPush naming the
    member."""
    missing = SIGNATURE_MEMBERS - set(document)
    if missing:
        raise UnsignedPush("the push is not signed", check="signature", param=sorted(missing)[0],
                           expected=sorted(SIGNED_MEMBERS | SIGNATURE_MEMBERS),
                           actual=sorted(document))
    if set(document) != SIGNED_MEMBERS | SIGNATURE_MEMBERS:
        raise MalformedPush("not a signed status document", check="members",
                            expected=sorted(SIGNED_MEMBERS | SIGNATURE_MEMBERS),
                            actual=sorted(document))
    payload = document["payload"]
    enclave_id = claimed_enclave_id(document)
    if not isinstance(payload, dict) or enclave_id is None:
        raise MalformedPush("payload is not an object with an enclave_id string",
                            check="enclave_id", param="payload.enclave_id")
    return SignedPush(
        enclave_id=enclave_id,
        time=_time(payload.get("time")),
        payload=payload,
        signed={name: document[name] for name in SIGNED_MEMBERS},
        certificate=_certificate(document[CERTIFICATE_MEMBER]),
    )


def verify_signature(push: SignedPush) -> None:
    """The signature verifies with the certificate's key, for the status push purpose, over
    exactly the members received. Raises BadSignature naming the check."""
    try:
        verify_json(push.signed, purpose=STATUS_PUSH_PURPOSE, certificate=push.certificate)
    except SignatureError as exc:
        raise BadSignature(f"signature refused: {exc}", check=exc.check,
                           param="signature") from None


def _time(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MalformedPush("payload.time is not an ISO 8601 time with an offset", check="time",
                            param="payload.time", actual=repr(value)[:80])
    return moment.astimezone(UTC)


def _certificate(value: Any) -> x509.Certificate:
    try:
        if not isinstance(value, str):
            raise ValueError(f"a {type(value).__name__}, not a PEM string")
        return x509.load_pem_x509_certificate(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise MalformedPush(f"{CERTIFICATE_MEMBER} is not a PEM certificate: {exc}",
                            check=CERTIFICATE_MEMBER, param=CERTIFICATE_MEMBER) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
