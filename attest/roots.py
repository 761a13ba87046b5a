"""Trust anchors for DCAP verification: Intel's SGX Root CA (package data) or a caller's root.

Any root other than Intel's makes every result `simulated`: that is how a simulated quote can
verify in development without ever passing for a genuine TD.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.certs import load_certificate
from attest.errors import CertificateError

# SHA-256 of the DER of "Intel SGX Root CA" (serial 22650CD6..., valid 2018-05-21..2049-12-31).
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
_INTEL_ROOT_RESOURCE = "intel_sgx_root_ca.pem"


@dataclass(frozen=True)
class TrustRoot:
    """A root certificate that verification chains to, and its SHA-256 fingerprint (hex)."""

    der: bytes
    certificate: x509.Certificate = field(init=False, repr=False, compare=False)
    sha256: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        try:
            certificate = load_certificate(self.der)
        except ValueError as exc:
            raise CertificateError(
                "trust root is not a certificate", check="root", actual=str(exc)
            ) from None
        object.__setattr__(self, "certificate", certificate)
        object.__setattr__(self, "sha256", hashlib.sha256(self.der).hexdigest())

    @property
    def is_intel(self) -> bool:
        return self.sha256 == INTEL_SGX_ROOT_CA_SHA256

    @classmethod
    def from_pem(cls, pem: bytes | str) -> TrustRoot:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise CertificateError(
                "trust root is not a PEM certificate", check="root", actual=str(exc)
            ) from None
        if len(certificates) != 1:
            raise CertificateError(
                "a trust root file holds exactly one certificate",
                check="root",
                expected=1,
                actual=len(certificates),
            )
        return cls(certificates[0].public_bytes(Encoding.DER))

    @classmethod
    def from_file(cls, path: Path) -> TrustRoot:
        """PEM or DER, by content."""
        data = Path(path).read_bytes()
        return cls.from_pem(data) if b"-----BEGIN" in data else cls(data)


def intel_sgx_root_ca() -> TrustRoot:
    """Intel's SGX Root CA from package data, checked against its pinned fingerprint."""
    pem = resources.files("attest").joinpath("data", _INTEL_ROOT_RESOURCE).read_bytes()
    root = TrustRoot.from_pem(pem)
    if not root.is_intel:
        # A modified package must not quietly change what "genuine" means.
        raise CertificateError(
            "packaged Intel SGX Root CA does not match its pinned fingerprint",
            check="root.sha256",
            expected=INTEL_SGX_ROOT_CA_SHA256,
            actual=root.sha256,
        )
    return root
