"""Signed receipts: what the appliance answered to which exact request, under which certificate.

Receipt v1 (JSON)::

    {"type": "appliance.receipt.v1", "id": str, "time": "YYYY-MM-DDTHH:MM:SS[.ffffff]Z",
     "model": str, "model_digest": hex | null,
     "request_sha256": hex, "response_sha256": hex,
     "usage": {"prompt_tokens": int, "completion_tokens": int | null, "total_tokens": int} | null,
     "status": int 100..599, "outcome": "complete" | "client_disconnected" | "engine_failed",
     "certificate_sha256": hex, "previous_receipt_sha256": hex | null,
     "receipt_sha256": hex, "signature": hex}

`receipt_sha256` = SHA-256(canonical_json(body)), where body is every member except
`receipt_sha256` and `signature`; `signature` = ECDSA-P256-SHA256 (r || s) over the same canonical
bytes, by the attested key of the certificate named by `certificate_sha256`. The hash chain links
each receipt to the previous one's `receipt_sha256` (null for the first of a log). The response
hash covers the exact body bytes sent (for streams, the whole SSE body). `status` is the HTTP status
the engine answered; `outcome` says whether the response was sent whole ("complete") or the stream
was cut, by the client going away ("client_disconnected") or by the engine failing mid-stream
("engine_failed"): then `response_sha256` covers the bytes written to the connection before the
cut. No prompt or completion text is in a receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ratls.errors import IncompleteReceiptError, ReceiptChainError, ReceiptError, SignatureError
from ratls.profile import MODEL_DIGEST_OID
from ratls.signing import canonical_json, certificate_sha256, sign_bytes, verify_bytes

RECEIPT_TYPE: Final = "appliance.receipt.v1"

# How the response ended: sent whole, or a stream cut by the client or by the engine.
Outcome = Literal["complete", "client_disconnected", "engine_failed"]
COMPLETE: Outcome = "complete"

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
DigestHex = Annotated[str, Field(pattern=r"^([0-9a-f]{2}){20,64}$")]
SignatureHex = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
NonNegative = Annotated[int, Field(ge=0)]


class Usage(BaseModel):
    """Token usage as vLLM reports it (completion_tokens is absent for embeddings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    prompt_tokens: NonNegative
    completion_tokens: NonNegative | None = None
    total_tokens: NonNegative


class ReceiptBody(BaseModel):
    """The signed content of a receipt; the service fills it, `sign_receipt` seals it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: Literal["appliance.receipt.v1"] = RECEIPT_TYPE
    id: Annotated[str, Field(min_length=1, max_length=200)]
    time: Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")]
    model: Annotated[str, Field(min_length=1, max_length=500)]
    model_digest: DigestHex | None
    request_sha256: Sha256Hex
    response_sha256: Sha256Hex
    usage: Usage | None
    status: Annotated[int, Field(ge=100, le=599)]
    outcome: Outcome
    certificate_sha256: Sha256Hex
    previous_receipt_sha256: Sha256Hex | None

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


class Receipt(ReceiptBody):
    """A sealed receipt: the body plus its own hash and the attested key's signature."""

    receipt_sha256: Sha256Hex
    signature: SignatureHex

    def body(self) -> ReceiptBody:
        return ReceiptBody.model_validate(self.model_dump(exclude={"receipt_sha256", "signature"}))


def format_time(moment: datetime) -> str:
    """Receipt time format: UTC with a trailing Z (microseconds kept when present)."""
    if moment.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sign_receipt(
    body: ReceiptBody, *, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
) -> Receipt:
    """Seal `body` with the attested key; `body.certificate_sha256` must name `certificate`."""
    if body.certificate_sha256 != certificate_sha256(certificate):
        raise ValueError("receipt body names another certificate than the signing one")
    message = body.canonical()
    return Receipt(
        **body.model_dump(),
        receipt_sha256=hashlib.sha256(message).hexdigest(),
        signature=sign_bytes(private_key, message).hex(),
    )


def parse_receipt(data: Mapping[str, Any] | str | bytes) -> Receipt:
    """A receipt from its JSON (text or decoded). Raises ReceiptError naming the bad field."""
    try:
        if isinstance(data, str | bytes):
            return Receipt.model_validate_json(data)
        return Receipt.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "receipt"
        raise ReceiptError(f"malformed receipt: {field}: {first['msg']}", check=field) from None


def verify_receipt(
    receipt: Receipt | Mapping[str, Any] | str | bytes,
    request_bytes: bytes,
    response_bytes: bytes,
    attested_certificate: x509.Certificate,
    *,
    allow_incomplete: bool = False,
) -> Receipt:
    """Check a receipt against the exact request and response bytes and the attested certificate.

    What the caller can check against its own data comes first (certificate, model digest,
    request), so the error names the field that differs; then the receipt's own hash (any other
    changed field) and the signature; then the outcome; then the response bytes. Raises
    ReceiptError with `check` = the field; returns the parsed receipt.

    A genuine receipt for a cut stream (outcome other than "complete") raises
    IncompleteReceiptError, unless `allow_incomplete`. It comes before the response check: a client
    whose stream was cut may hold fewer bytes than the receipt covers (those the appliance wrote
    to the connection before it saw the disconnect), and it should learn that the stream was cut,
    not that the bytes differ.
    """
    if not isinstance(receipt, Receipt):
        receipt = parse_receipt(receipt)
    # 1. The certificate the receipt names is the attested one.
    _expect(
        "certificate_sha256", certificate_sha256(attested_certificate), receipt.certificate_sha256
    )
    # 2. The model digest is the one that certificate carries.
    _expect("model_digest", _certificate_model_digest(attested_certificate), receipt.model_digest)
    # 3. The exact request bytes.
    _expect("request_sha256", hashlib.sha256(request_bytes).hexdigest(), receipt.request_sha256)
    # 4. The receipt's own hash, then the signature over the same bytes.
    check_sealed(receipt, attested_certificate)
    # 5. The response was sent whole (after the seal: this error means "genuine, but cut").
    if receipt.outcome != COMPLETE and not allow_incomplete:
        raise IncompleteReceiptError(
            f"receipt {receipt.id} covers an incomplete response",
            check="outcome",
            expected=COMPLETE,
            actual=receipt.outcome,
        )
    # 6. The exact response bytes.
    _expect("response_sha256", hashlib.sha256(response_bytes).hexdigest(), receipt.response_sha256)
    return receipt


def check_sealed(receipt: Receipt, certificate: x509.Certificate) -> None:
    """The receipt's own hash and its signature by `certificate`'s key (no request/response)."""
    message = receipt.body().canonical()
    _expect("receipt_sha256", hashlib.sha256(message).hexdigest(), receipt.receipt_sha256)
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ReceiptError("certificate has no EC key", check="signature")
    try:
        verify_bytes(public_key, message, bytes.fromhex(receipt.signature))
    except SignatureError as exc:
        raise ReceiptError(f"receipt signature does not verify: {exc}", check="signature") from None


def verify_receipt_chain(
    receipts: Sequence[Receipt | Mapping[str, Any]],
    certificates: Mapping[str, x509.Certificate],
    *,
    first_previous: str | None = None,
    from_start: bool = False,
) -> None:
    """Check that `receipts` (oldest first) are each sealed and form an unbroken hash chain.

    `certificates` maps SHA-256 fingerprints (hex) to attested certificates; a receipt under an
    unknown certificate breaks the chain. `from_start=True` requires the first receipt to start
    a log (previous null); `first_previous` pins the hash the first receipt must link to.
    Receipts of cut streams are members of the chain like any other: their `outcome` is not checked.
    """
    previous: str | None = first_previous
    for index, item in enumerate(receipts):
        try:
            receipt = item if isinstance(item, Receipt) else parse_receipt(item)
            certificate = certificates.get(receipt.certificate_sha256)
            if certificate is None:
                raise ReceiptError(
                    "receipt is signed under a certificate that was not attested",
                    check="certificate_sha256",
                    actual=receipt.certificate_sha256,
                )
            check_sealed(receipt, certificate)
        except ReceiptError as exc:
            raise ReceiptChainError(str(exc), index=index, check=exc.check) from exc
        if index == 0 and not from_start and first_previous is None:
            previous = receipt.receipt_sha256
            continue
        if receipt.previous_receipt_sha256 != previous:
            raise ReceiptChainError(
                "chain broken: previous_receipt_sha256 does not link to the receipt before",
                index=index,
                check="previous_receipt_sha256",
                expected=previous if previous is not None else "null",
                actual=receipt.previous_receipt_sha256 or "null",
            )
        previous = receipt.receipt_sha256


def _certificate_model_digest(certificate: x509.Certificate) -> str | None:
    try:
        ext = certificate.extensions.get_extension_for_oid(MODEL_DIGEST_OID).value
    except x509.ExtensionNotFound:
        return None
    return ext.value.hex() if isinstance(ext, x509.UnrecognizedExtension) else None


def _expect(field: str, expected: str | None, actual: str | None) -> None:
    if expected != actual:
        raise ReceiptError(
            f"receipt {field} does not match",
            check=field,
            expected=expected if expected is not None else "null",
            actual=actual if actual is not None else "null",
        )
