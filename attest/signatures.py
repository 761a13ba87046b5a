"""The signature checks of DCAP verification, as predicates: ECDSA P-256 with raw r||s
signatures (quotes, QE reports, collateral documents), certificates and CRLs by their issuer.

Time-independent, so `attest.chains` can cache what they establish; the caller turns a False
into the typed error that names its check.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest.collateral import RevocationList

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_COORDINATE_SIZE = 32


def raw_signature_valid(public_key: Any, signature: bytes, data: bytes) -> bool:
    """ECDSA-P256-SHA256 over `data` with a raw r||s signature (as in quotes and collateral)."""
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or len(signature) != 2 * _COORDINATE_SIZE
    ):
        return False
    r = int.from_bytes(signature[:_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[_COORDINATE_SIZE:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def crl_signed_by(crl: RevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        return isinstance(key, ec.EllipticCurvePublicKey) and crl.crl.is_signature_valid(key)
    except (TypeError, UnsupportedAlgorithm):
        return False
