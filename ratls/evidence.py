"""Nonce evidence for `GET /v1/attestation?nonce=<hex>`: freshness without a forked TLS stack.

The server answers with a fresh quote whose REPORTDATA = SHA-512(SHA-256(SPKI DER) || nonce),
SPKI being the key of the certificate it presents on that very connection. The client checks
the echoed fields here and the quote itself (DCAP, policy, binding) in `ratls.verifier`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attest.providers import QuoteProvider
from attest.rtmr import RtmrEventLog
from ratls.errors import BindingError, EvidenceUnavailableError, NonceError
from ratls.issuer import Identity
from ratls.profile import NONCE_MAX_SIZE, RatlsCertificate, check_nonce, nonce_report_data

EVIDENCE_VERSION: Final = 1
# Bounds what a client reads: a quote is 5-8 KB, the event log grows by one event per model load.
MAX_EVIDENCE_SIZE = 1024 * 1024


class NonceEvidence(BaseModel):
    """The `/v1/attestation` response body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = EVIDENCE_VERSION
    quote: str  # base64 of the raw quote
    nonce: Annotated[str, Field(pattern=r"^([0-9a-f]{2}){16,64}$")]
    certificate_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    tee: Literal["tdx", "simulated"]
    model_digest: str | None
    time: datetime
    event_log: dict[str, Any] | None = None

    def quote_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.quote, validate=True)
        except binascii.Error as exc:
            raise EvidenceUnavailableError(
                f"evidence quote is not base64: {exc}", check="quote"
            ) from None

    def rtmr_event_log(self) -> RtmrEventLog | None:
        if self.event_log is None:
            return None
        return RtmrEventLog.from_json(json.dumps(self.event_log))


def parse_nonce_hex(text: str | None) -> bytes:
    """The nonce of a `?nonce=` query value: 16-64 bytes in hex. Raises NonceError."""
    if not text:
        raise NonceError("nonce is required", check="nonce")
    if len(text) > 2 * NONCE_MAX_SIZE:
        raise NonceError(
            "nonce is too long", check="nonce_length", actual=f"{len(text)} hex digits"
        )
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise NonceError("nonce is not hex", check="nonce") from None
    check_nonce(nonce)
    return nonce


def make_nonce_evidence(
    identity: Identity,
    provider: QuoteProvider,
    nonce: bytes,
    *,
    now: datetime,
    event_log: RtmrEventLog | None = None,
) -> NonceEvidence:
    """Server side: a fresh quote binding `identity`'s key and the client's `nonce`.

    `identity` must be the one presented on the connection the request arrived on. Raises
    NonceError for a nonce outside 16-64 bytes, before asking the provider for anything.
    """
    report_data = nonce_report_data(identity.certificate.spki, nonce)
    quote = provider.get_quote(report_data)
    return NonceEvidence(
        quote=base64.b64encode(quote).decode("ascii"),
        nonce=nonce.hex(),
        certificate_sha256=identity.fingerprint.hex(),
        tee=provider.tee,
        model_digest=identity.model_digest.hex() if identity.model_digest else None,
        time=now,
        event_log=json.loads(event_log.to_json()) if event_log is not None else None,
    )


def parse_nonce_evidence(body: bytes) -> NonceEvidence:
    if len(body) > MAX_EVIDENCE_SIZE:
        raise EvidenceUnavailableError(
            "nonce evidence too large",
            check="size",
            expected=f"<= {MAX_EVIDENCE_SIZE}",
            actual=len(body),
        )
    try:
        return NonceEvidence.model_validate_json(body)
    except ValidationError as exc:
        raise EvidenceUnavailableError(f"malformed nonce evidence: {exc}", check="json") from None


def check_nonce_evidence(
    evidence: NonceEvidence, nonce: bytes, certificate: RatlsCertificate
) -> None:
    """Client side, the echoed fields: our nonce, the connection's certificate, its model digest.

    The quote itself (signature, policy, REPORTDATA binding) is the verifier's job.
    """
    if evidence.nonce != nonce.hex():
        raise BindingError(
            "evidence answers another nonce",
            check="nonce",
            expected=nonce.hex(),
            actual=evidence.nonce,
        )
    if evidence.certificate_sha256 != certificate.fingerprint.hex():
        raise BindingError(
            "evidence names another certificate than the connection's",
            check="certificate_sha256",
            expected=certificate.fingerprint.hex(),
            actual=evidence.certificate_sha256,
        )
    cert_digest = certificate.model_digest.hex() if certificate.model_digest else None
    if evidence.model_digest != cert_digest:
        raise BindingError(
            "evidence names another model digest than the certificate",
            check="model_digest",
            expected=cert_digest or "none",
            actual=evidence.model_digest or "none",
        )
