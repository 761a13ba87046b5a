"""The simulated SGX PKI: the authority's keys and certificates, issued in the profile of Intel's
(root CA, PCK Platform CA, PCK certificate with the SGX extension, TCB signing certificate), and
DCAP's raw ECDSA encodings. Every subject says SIMULATED. `attest.simulated.authority` keeps
them in a directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attest.pck import SGX_EXTENSION_OID
from attest.simulated.platform import SimulatedPlatform

ORGANIZATION = "SIMULATED attestation authority (development only)"
ROOT_CN = "SIMULATED SGX Root CA"
PCK_PLATFORM_CA_CN = "SIMULATED SGX PCK Platform CA"
PCK_CN = "SIMULATED SGX PCK Certificate"
TCB_SIGNING_CN = "SIMULATED SGX TCB Signing"

CA_LIFETIME = dt.timedelta(days=25 * 365)
LEAF_LIFETIME = dt.timedelta(days=7 * 365)
# Backdated so that collateral issued "now" (an hour back) lies well inside the chain's validity,
# and a verifier whose clock is slightly behind still accepts it.
BACKDATE = dt.timedelta(days=1)


@dataclass(frozen=True)
class AuthorityKeys:
    root: ec.EllipticCurvePrivateKey
    pck_platform_ca: ec.EllipticCurvePrivateKey
    pck: ec.EllipticCurvePrivateKey
    tcb_signing: ec.EllipticCurvePrivateKey
    attestation: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class AuthorityCertificates:
    root: x509.Certificate
    pck_platform_ca: x509.Certificate
    pck: x509.Certificate
    tcb_signing: x509.Certificate


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 as DCAP encodes it: r || s, 32 bytes each, big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """x || y of a P-256 public key (the quote's attestation key format, no 0x04 prefix)."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def issue_certificates(
    keys: AuthorityKeys, platform: SimulatedPlatform, now: dt.datetime
) -> AuthorityCertificates:
    not_before = now.replace(microsecond=0) - BACKDATE
    root = _certificate(
        ROOT_CN, keys.root, keys.root, None, not_before, not_before + CA_LIFETIME, path_length=1
    )
    pck_ca = _certificate(
        PCK_PLATFORM_CA_CN,
        keys.pck_platform_ca,
        keys.root,
        root,
        not_before,
        not_before + CA_LIFETIME,
        path_length=0,
    )
    pck = _certificate(
        PCK_CN,
        keys.pck,
        keys.pck_platform_ca,
        pck_ca,
        not_before,
        not_before + LEAF_LIFETIME,
        sgx_extension=platform.sgx_extension(),
    )
    tcb_signing = _certificate(
        TCB_SIGNING_CN, keys.tcb_signing, keys.root, root, not_before, not_before + LEAF_LIFETIME
    )
    return AuthorityCertificates(root, pck_ca, pck, tcb_signing)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _certificate(
    common_name: str,
    subject_key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    path_length: int | None = None,
    sgx_extension: bytes | None = None,
) -> x509.Certificate:
    """A certificate with the extensions of Intel's SGX PKI profile (CA or end entity)."""
    is_ca = path_length is not None
    public_key = subject_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.subject if issuer else _name(common_name))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=not is_ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if sgx_extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())
