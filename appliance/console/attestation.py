"""The verdict on a pushed certificate for one registered enclave, reached once and reused.

What ties a certificate to an enclave, in order:
1. RA-TLS verification (`ratls.verifier.RatlsVerifier.attest`) under the enclave's policy: the
   profile, the self-signature, validity and lifetime, the subject alternative names including
   the registered URL's host, DCAP (collateral from the appliance itself for a simulated enclave,
   from Intel's PCS or a PCCS otherwise), the quote binding the certificate's key, the policy's
   measurements, TCB and model digest.
2. The key: the appliance answering at the registered URL presents the certificate's key
   (`appliance/console/key_probe.py`). Names alone do not tell two appliances of one image apart
   (any of them can be started with another's host name, or share one, as on a test machine);
   only the TD that answers at the registered URL holds that key.

Reuse: a verified certificate until its verdict's `valid_until` (the certificate's notAfter or
the collateral's next update); a refusal for `refusal_ttl`, so a bad certificate pushed again
costs no DCAP run; evidence that could not be had (collateral, an unreachable URL) is not a
verdict and is not kept. The cache belongs to one process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.console.errors import (
    ApplianceUnreachable,
    CertificateRefused,
    EvidenceUnavailable,
    ForeignCertificate,
    Refused,
)
from appliance.console.key_probe import KeyProbe, spki_sha256
from appliance.console.registry import RegisteredEnclave
from attest.pcs import CollateralFetcher, PcsClient, PcsEndpoint
from attest.roots import intel_sgx_root_ca
from attest.verify import DcapVerifier
from ratls.clock import Clock
from ratls.collateral import CollateralSource, PcsCollateral, ServedCollateral
from ratls.result import AttestationResult
from ratls.verifier import RatlsVerifier

log = logging.getLogger(__name__)

DEFAULT_REFUSAL_TTL = timedelta(minutes=1)
MAX_CACHED_VERDICTS = 1024
# Stages of errors about getting evidence, not about the evidence (ratls transport, attest fetch).
UNAVAILABLE_STAGES = frozenset({"transport", "collateral"})
HOSTNAME_CHECK = "hostname"
KEY_CHECK = "registered_url_key"

MakeVerifier = Callable[[RegisteredEnclave], RatlsVerifier]


def verifier_factory(*, clock: Clock, pccs_url: str | None = None) -> MakeVerifier:
    """Verifiers per enclave: a simulated one trusts its own root and the collateral it serves;
    the others Intel's root and one PCS/PCCS fetcher shared by all."""
    fetcher: CollateralFetcher | None = None

    def make(enclave: RegisteredEnclave) -> RatlsVerifier:
        nonlocal fetcher
        collateral: CollateralSource
        if enclave.simulated_root is not None:
            root = enclave.simulated_root
            collateral = ServedCollateral(enclave.url)
        else:
            root = intel_sgx_root_ca()
            if fetcher is None:
                endpoint = PcsEndpoint.pccs(pccs_url) if pccs_url else PcsEndpoint.intel()
                fetcher = CollateralFetcher(PcsClient(endpoint))
            collateral = PcsCollateral(fetcher)
        return RatlsVerifier(dcap=DcapVerifier(root), policy=enclave.policy,
                             collateral=collateral, clock=clock)

    return make


@dataclass(frozen=True)
class CertificateVerdict:
    """What the console concluded about one certificate of one enclave, and until when."""

    result: AttestationResult
    # SHA-256 of the key the registered URL presented; None when attestation refused first.
    presented_key_sha256: bytes | None
    certificate_key_sha256: bytes
    reusable_until: datetime

    @property
    def accepted(self) -> bool:
        return self.result.verified and self.presented_key_sha256 == self.certificate_key_sha256


class CertificateAttestor:
    """Thread-safe; holds the verdict cache of one console process."""

    def __init__(self, verifiers: Mapping[str, RatlsVerifier], key_probe: KeyProbe, *,
                 refusal_ttl: timedelta = DEFAULT_REFUSAL_TTL,
                 max_cached: int = MAX_CACHED_VERDICTS) -> None:
        self._verifiers = verifiers
        self._key_probe = key_probe
        self._refusal_ttl = refusal_ttl
        self._max_cached = max_cached
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, bytes], CertificateVerdict] = OrderedDict()

    def check(self, enclave: RegisteredEnclave, certificate: x509.Certificate, *,
              now: datetime) -> AttestationResult:
        """The verified result, or raises the Refused subclass that says why not."""
        verdict = self.verdict(enclave, certificate, now=now)
        refusal = refusal_of(enclave, verdict)
        if refusal is not None:
            raise refusal
        return verdict.result

    def verdict(self, enclave: RegisteredEnclave, certificate: x509.Certificate, *,
                now: datetime) -> CertificateVerdict:
        der = certificate.public_bytes(Encoding.DER)
        key = (enclave.enclave_id, hashlib.sha256(der).digest())
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now < cached.reusable_until:
                self._cache.move_to_end(key)
                return cached
        verdict = self._decide(enclave, certificate, der, now)
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return verdict

    def _decide(self, enclave: RegisteredEnclave, certificate: x509.Certificate, der: bytes,
                now: datetime) -> CertificateVerdict:
        # 1. RA-TLS verification, with the registered host as the name to match.
        result = self._verifiers[enclave.enclave_id].attest(der, hostname=enclave.host, now=now)
        certificate_key = spki_sha256(certificate)
        if not result.verified:
            error = result.errors[0] if result.errors else None
            if error is not None and error.stage in UNAVAILABLE_STAGES:
                raise EvidenceUnavailable(
                    f"evidence for {enclave.enclave_id}'s certificate is unavailable: "
                    f"{error.message}", check=error.check or error.stage,
                    param="certificate_pem")
            log.info("certificate of %s refused at %s", enclave.enclave_id,
                     error.check if error else "?")
            return CertificateVerdict(result, None, certificate_key, now + self._refusal_ttl)
        # 2. The key the registered URL presents.
        try:
            presented = self._key_probe.presented_key_sha256(enclave.url)
        except (OSError, ValueError) as exc:
            raise ApplianceUnreachable(
                f"cannot compare keys: no TLS handshake with {enclave.url}: {exc}",
                check=KEY_CHECK, param="certificate_pem") from None
        held = presented == certificate_key
        reusable_until = result.valid_until if held and result.valid_until else (
            now + self._refusal_ttl)
        log.info("certificate %s of %s verified; key %s at %s",
                 result.certificate.sha256_fingerprint if result.certificate else "?",
                 enclave.enclave_id, "presented" if held else "NOT presented", enclave.url)
        return CertificateVerdict(result, presented, certificate_key, reusable_until)


def refusal_of(enclave: RegisteredEnclave, verdict: CertificateVerdict) -> Refused | None:
    """The refusal a verdict stands for, or None when the certificate is the enclave's."""
    result = verdict.result
    if not result.verified:
        error = result.errors[0] if result.errors else None
        check = (error.check or error.type) if error else "attestation"
        message = error.message if error else "not verified"
        if check == HOSTNAME_CHECK:
            return ForeignCertificate(
                f"the certificate is not for {enclave.enclave_id}'s registered host: {message}",
                check=check, param="certificate_pem")
        return CertificateRefused(f"attestation refused at {check}: {message}", check=check,
                                  param="certificate_pem")
    if not verdict.accepted:
        return ForeignCertificate(
            f"the appliance at {enclave.url} presents another key than the pushed certificate's",
            check=KEY_CHECK, param="certificate_pem",
            expected=verdict.certificate_key_sha256, actual=verdict.presented_key_sha256)
    return None

