"""The server's RA-TLS identity: an in-memory P-256 key, a certificate that carries a fresh quote.

`IdentityIssuer` re-issues on demand (model load/unload) and before expiry, under a lock, with a
generation number that increases by one per issuance. The key is generated in memory and is
never written anywhere by `ratls` (the server context hands it to OpenSSL through an anonymous
memory file, see `ratls.server`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import AttestError
from attest.providers import QuoteProvider
from attest.quote import parse_quote
from ratls.clock import Clock
from ratls.errors import IssuanceError
from ratls.profile import (
    DEFAULT_VALIDITY,
    RatlsCertificate,
    SubjectNames,
    build_certificate,
    certificate_report_data,
    models_or_digest,
    parse_certificate,
    spki_der,
    truncate_to_minute,
)
from ratls.served_models import ServedModel, served_models

log = logging.getLogger(__name__)

DEFAULT_RENEW_BEFORE = timedelta(hours=1)


@dataclass(frozen=True)
class Identity:
    """One issuance: the key, its certificate (quote and served models inside), a generation."""

    generation: int
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: RatlsCertificate
    tee: str

    @classmethod
    def from_parts(
        cls,
        *,
        generation: int,
        private_key: ec.EllipticCurvePrivateKey,
        certificate_der: bytes,
        tee: str,
    ) -> Identity:
        """Rebuild an identity received over a local channel; the key must match the certificate."""
        certificate = parse_certificate(certificate_der)
        if spki_der(private_key.public_key()) != certificate.spki:
            raise IssuanceError("private key does not match the certificate", check="key_match")
        return cls(generation=generation, private_key=private_key, certificate=certificate, tee=tee)

    @property
    def quote(self) -> bytes:
        return self.certificate.quote

    @property
    def model_digest(self) -> bytes | None:
        """The one served model's digest; None with no model and with several."""
        return self.certificate.model_digest

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return self.certificate.models

    @property
    def fingerprint(self) -> bytes:
        return self.certificate.fingerprint

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_after

    def private_key_pem(self) -> bytes:
        """PKCS#8 PEM for OpenSSL or a local channel to gunicorn workers. Never write it to disk."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class IdentitySource(Protocol):
    """Where a server context gets the identity to present (the issuer, or a channel to it)."""

    def current(self) -> Identity: ...


class IdentityIssuer:
    """Issues and re-issues the RA-TLS identity. Thread-safe; implements `IdentitySource`.

    One key per issuer (docs/design.md: generated at start, never leaves the TD); each issuance
    is a new certificate with a new quote. `current()` re-issues when the certificate is within
    `renew_before` of its notAfter (or the clock went back before its notBefore).
    """

    def __init__(
        self,
        provider: QuoteProvider,
        names: SubjectNames,
        *,
        clock: Clock,
        validity: timedelta = DEFAULT_VALIDITY,
        renew_before: timedelta = DEFAULT_RENEW_BEFORE,
    ) -> None:
        if not timedelta(minutes=5) <= validity <= timedelta(days=30):
            raise ValueError(f"validity must be between 5 minutes and 30 days, not {validity}")
        if not timedelta(0) <= renew_before < validity - timedelta(minutes=2):
            raise ValueError("renew_before must be non-negative and leave the certificate usable")
        self._provider = provider
        self._names = names
        self._clock = clock
        self._validity = validity
        self._renew_before = renew_before
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._lock = threading.Lock()
        self._identity: Identity | None = None
        self._models: tuple[ServedModel, ...] = ()

    def current(self) -> Identity:
        """The identity to present now, issuing a new one first if needed."""
        with self._lock:
            identity = self._identity
            now = self._clock()
            if identity is None or not self._usable(identity, now):
                identity = self._issue_locked(now)
            return identity

    def reissue(
        self, *, models: Iterable[ServedModel] = (), model_digest: bytes | None = None
    ) -> Identity:
        """Issue an identity serving `models` (none: no model). Call on every load and unload.

        `model_digest=` is the one-model form of callers that name no model: the certificate then
        carries MODEL_DIGEST alone, as before MODEL_DIGESTS (None: no model). Bad input raises
        CertificateFormatError (or ValueError for both forms at once) and changes nothing.
        """
        served = served_models(models_or_digest(models, model_digest))
        with self._lock:
            self._models = served
            return self._issue_locked(self._clock())

    def _usable(self, identity: Identity, now: datetime) -> bool:
        cert = identity.certificate
        return cert.not_before <= now < cert.not_after - self._renew_before

    def _issue_locked(self, now: datetime) -> Identity:
        # 1. notBefore truncated to the minute; 2. REPORTDATA from the SPKI and notBefore;
        # 3. a quote over it; 4. the certificate that carries the quote and the served models.
        not_before = truncate_to_minute(now)
        spki = spki_der(self._key.public_key())
        report_data = certificate_report_data(spki, not_before)
        try:
            quote = self._provider.get_quote(report_data)
        except Exception as exc:
            raise IssuanceError(f"quote provider failed: {exc}", check="get_quote") from exc
        if not isinstance(quote, bytes) or not quote:
            raise IssuanceError("quote provider returned no quote", check="get_quote")
        # A provider bug must not become a certificate whose binding no client can verify.
        try:
            quoted = parse_quote(quote).body.report_data
        except AttestError as exc:
            raise IssuanceError(
                f"quote provider returned a malformed quote: {exc}", check="quote_format"
            ) from exc
        if quoted != report_data:
            raise IssuanceError(
                "quote does not carry the REPORTDATA asked for",
                check="report_data",
                expected=report_data,
                actual=quoted,
            )
        certificate = build_certificate(
            self._key,
            names=self._names,
            quote=quote,
            models=self._models,
            not_before=not_before,
            validity=self._validity,
        )
        generation = self._identity.generation + 1 if self._identity else 1
        identity = Identity(
            generation=generation,
            private_key=self._key,
            certificate=parse_certificate(certificate.public_bytes(serialization.Encoding.DER)),
            tee=self._provider.tee,
        )
        self._identity = identity
        log.info(
            "issued RA-TLS identity generation %d: certificate sha256 %s, models %s, "
            "valid until %s",
            generation,
            identity.fingerprint.hex(),
            ", ".join(f"{m.name or 'unnamed'} {m.digest.hex()}" for m in self._models) or "none",
            identity.not_after.isoformat(),
        )
        return identity
