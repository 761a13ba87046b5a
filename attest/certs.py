"""X.509 helpers shared by collateral, roots and verification."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from attest.errors import CertificateError

# What `cryptography` raises, besides ValueError, for certificates and CRLs it cannot read
# (a TypeError comes from a name attribute of an impossible type).
X509_PARSE_ERRORS = (
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def load_certificate(der: bytes, *, parse_names: bool = True) -> x509.Certificate:
    """A DER certificate with every field verification reads already parsed.

    `cryptography` parses some fields only on first access, so a malformed name or extension
    would otherwise surface as a `ValueError` or `TypeError` deep inside verification. Raises
    `ValueError`. `parse_names=False` skips building the subject and issuer `Name`s (slow, and
    needed only for messages) of a certificate whose issuer `verify_directly_issued_by` checks.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = (
            certificate.extensions,
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            certificate.signature_algorithm_oid,
            certificate.public_key(),
        )
        if parse_names:
            _ = (certificate.subject, certificate.issuer)
    except ValueError:
        raise
    except X509_PARSE_ERRORS as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if certificate.serial_number <= 0:
        raise ValueError("certificate serial number is not positive (RFC 5280)")
    return certificate


def load_pck_leaf(der: bytes, *, parse_names: bool = True) -> x509.Certificate:
    """The PCK leaf certificate of a quote's chain. Raises CertificateError (check `pck_leaf`):
    whatever the chain holds, reading it is a verification step with a named failure."""
    try:
        return load_certificate(der, parse_names=parse_names)
    except ValueError as exc:
        raise CertificateError(
            "PCK leaf certificate is malformed", check="pck_leaf", actual=str(exc)
        ) from None


def common_name(name: x509.Name) -> str:
    """The first CN of an X.509 name, or "" when it has none."""
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""
