"""The GPU's device certificate chain, from the report-signing leaf to NVIDIA's device root.

A Hopper GPU's chain (PEM, leaf first), as the driver returns it:

    GH100 A01 GSP FMC LF          leaf: the report-signing key of the GSP firmware (FMC); its
                                  TCG DICE extension (2.23.133.5.4.1) ends with the FWID, the
                                  SHA-384 of that firmware, which the report repeats
    GH100 A01 GSP BROM            device-unique CA, provisioned in the factory
    NVIDIA GH100 Provisioner ICA 1
    NVIDIA GH100 Identity
    NVIDIA Device Identity CA     root, self-signed; the trust root, byte for byte

Checks (the code below follows these numbers); all but 7 depend only on the chain's bytes, so a
`GpuChainChecker` keeps their verdict per chain (at most `cache_size` chains):
 1. The PEM text holds 2 to `MAX_CHAIN_LENGTH` distinct certificates that `cryptography` reads
    entirely.
 2. The last one is the trust root, byte for byte.
 3. Each certificate is issued by the next: same name, signature by its key.
 4. Every certificate but the leaf is a CA (basicConstraints CA:TRUE, path length respected,
    keyCertSign if key usage is given).
 5. The leaf carries the DICE extension with a SHA-384 FWID (a CA here means a chain cut short
    of its leaf).
 6. The leaf is an end-entity certificate with a P-384 key allowed to sign.
 7. Every certificate, root included, is valid at the injected time (`require_valid_at`).
Revocation (OCSP) is collateral: `attest.nvidia.collateral`.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attest.certs import X509_PARSE_ERRORS, load_certificate
from attest.chains import LruCache
from attest.der import (
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    decode_oid,
    elements,
    expect_tag,
    single,
)
from attest.errors import (
    CertificateError,
    FormatError,
    GpuCertificateError,
    GpuCertificateValidityError,
)
from attest.roots import TrustRoot
from attest.signatures import issued_by
from attest.strict_json import format_utc_time
from attest.validity import valid_at, validity_windows

# SHA-256 of the DER of "NVIDIA Device Identity CA" (O=NVIDIA, valid 2021-11-05..9999-12-31,
# P-384), as NVIDIA's nvtrust ships it (verifier/certs/verifier_device_root.pem).
NVIDIA_DEVICE_IDENTITY_CA_SHA256 = (
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
)
_NVIDIA_ROOT_RESOURCE = "nvidia_device_identity_ca.pem"

MAX_CHAIN_LENGTH = 8
DICE_TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
SHA384_OID = "2.16.840.1.101.3.4.2.2"
FWID_SIZE = 48
DEFAULT_CACHE_SIZE = 32


def nvidia_device_identity_ca() -> TrustRoot:
    """NVIDIA's device identity root from package data, checked against its pinned fingerprint."""
    pem = resources.files("attest").joinpath("data", _NVIDIA_ROOT_RESOURCE).read_bytes()
    root = TrustRoot.from_pem(pem)
    if root.sha256 != NVIDIA_DEVICE_IDENTITY_CA_SHA256:
        # A modified package must not quietly change what "genuine" means.
        raise CertificateError(
            "packaged NVIDIA device identity CA does not match its pinned fingerprint",
            check="root.sha256",
            expected=NVIDIA_DEVICE_IDENTITY_CA_SHA256,
            actual=root.sha256,
        )
    return root


@dataclass(frozen=True)
class GpuChain:
    """A device chain that passed checks 1-6: leaf first, the trust root last."""

    certificates: tuple[x509.Certificate, ...] = field(compare=False, repr=False)
    sha256: tuple[str, ...]
    fwid: bytes
    leaf_key: ec.EllipticCurvePublicKey = field(compare=False, repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def leaf_sha256(self) -> str:
        return self.sha256[0]


class GpuChainChecker:
    """Checks device chains against one trust root. Safe to share between threads."""

    def __init__(self, root: TrustRoot, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._root = root
        self._verdicts: LruCache[bytes, GpuChain] = LruCache(cache_size)

    @property
    def root(self) -> TrustRoot:
        return self._root

    def verified_chain(self, chain_pems: bytes | str) -> GpuChain:
        """Checks 1-6 (time-independent; a chain that passed once is not checked again)."""
        data = chain_pems.encode() if isinstance(chain_pems, str) else bytes(chain_pems)
        cached = self._verdicts.get(data)
        if cached is not None:
            return cached
        chain = self._check(data)
        self._verdicts.put(data, chain)
        return chain

    def _check(self, data: bytes) -> GpuChain:
        # 1. Certificates.
        certificates = _load_chain(data)
        ders = tuple(c.public_bytes(Encoding.DER) for c in certificates)
        if len(set(ders)) != len(ders):
            raise GpuCertificateError(
                "device chain lists a certificate twice",
                check="chain.duplicate",
                expected="distinct certificates",
            )
        # 2. The trust root, byte for byte.
        if ders[-1] != self._root.der:
            raise GpuCertificateError(
                "device chain does not end in the trust root",
                check="chain.root",
                expected=self._root.sha256,
                actual=hashlib.sha256(ders[-1]).hexdigest(),
            )
        # 3. Each issued by the next.
        for position, (subject, issuer) in enumerate(itertools.pairwise(certificates)):
            if not issued_by(subject, issuer):
                raise GpuCertificateError(
                    "device certificate is not issued by the next one in the chain",
                    check=f"chain.link[{position}]",
                    expected=f"issued by {issuer.subject.rfc4514_string()}",
                    actual=f"issuer {subject.issuer.rfc4514_string()}",
                )
        # 4. CAs above the leaf.
        for position, certificate in enumerate(certificates[1:], start=1):
            _require_ca(certificate, position, cas_below=position - 1)
        # 5, 6. The leaf.
        leaf = certificates[0]
        fwid = leaf_fwid(leaf)
        leaf_key = _require_signing_leaf(leaf)
        return GpuChain(
            certificates=certificates,
            sha256=tuple(hashlib.sha256(der).hexdigest() for der in ders),
            fwid=fwid,
            leaf_key=leaf_key,
        )


def require_valid_at(chain: GpuChain, now: datetime) -> None:
    """7. Every certificate of the chain valid at `now`."""
    for position, certificate in enumerate(chain.certificates):
        if not valid_at(certificate, now):
            raise GpuCertificateValidityError(
                "device certificate is not valid at the given time",
                check=f"chain[{position}].validity",
                expected=validity_windows((certificate,)),
                actual=format_utc_time(now),
            )


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """The FWID at the end of the leaf's DICE extension: SEQUENCE {..., SEQUENCE {OID SHA-384,
    OCTET STRING digest}} (NVIDIA's layout: on Hopper a version and a public key come first)."""
    try:
        extension = leaf.extensions.get_extension_for_oid(DICE_TCB_INFO_OID).value
    except x509.ExtensionNotFound:
        raise GpuCertificateError(
            "leaf certificate has no DICE extension with the firmware's FWID: is the leaf "
            "missing from the chain?",
            check="leaf.fwid",
            expected=f"extension {DICE_TCB_INFO_OID.dotted_string}",
            actual="absent",
        ) from None
    raw = extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
    what = "leaf.fwid"
    try:
        items = elements(single(raw, TAG_SEQUENCE, what), what)
        if not items:
            raise FormatError("DICE extension is an empty SEQUENCE", check=what)
        fwid_pair = elements(expect_tag(items[-1], TAG_SEQUENCE, what), what)
        if len(fwid_pair) != 2:
            raise FormatError("FWID is not SEQUENCE {OID, digest}", check=what)
        algorithm = decode_oid(expect_tag(fwid_pair[0], TAG_OID, what), what)
        digest = expect_tag(fwid_pair[1], TAG_OCTET_STRING, what)
    except FormatError as exc:
        raise GpuCertificateError(
            "leaf certificate's DICE extension is malformed", check="leaf.fwid", actual=str(exc)
        ) from None
    if algorithm != SHA384_OID or len(digest) != FWID_SIZE:
        raise GpuCertificateError(
            "leaf certificate's FWID is not a SHA-384 digest",
            check="leaf.fwid",
            expected=f"{SHA384_OID}, {FWID_SIZE} bytes",
            actual=f"{algorithm}, {len(digest)} bytes",
        )
    return digest


def _load_chain(data: bytes) -> tuple[x509.Certificate, ...]:
    try:
        parsed = x509.load_pem_x509_certificates(data)
    except (ValueError, *X509_PARSE_ERRORS) as exc:
        raise GpuCertificateError(
            "device chain is not PEM certificates", check="chain.pem", actual=str(exc)
        ) from None
    if not 2 <= len(parsed) <= MAX_CHAIN_LENGTH:
        raise GpuCertificateError(
            "device chain must hold the report-signing leaf, its CAs and the root",
            check="chain.length",
            expected=f"2..{MAX_CHAIN_LENGTH} certificates",
            actual=len(parsed),
        )
    certificates = []
    for position, certificate in enumerate(parsed):
        try:
            certificates.append(load_certificate(certificate.public_bytes(Encoding.DER)))
        except ValueError as exc:
            raise GpuCertificateError(
                "device certificate is malformed", check=f"chain[{position}]", actual=str(exc)
            ) from None
    return tuple(certificates)


def _require_ca(certificate: x509.Certificate, position: int, *, cas_below: int) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise GpuCertificateError(
            "device certificate above the leaf is not a CA",
            check=f"chain[{position}].basic_constraints",
            expected="CA:TRUE",
            actual="CA:FALSE" if constraints else "absent",
        )
    if constraints.path_length is not None and cas_below > constraints.path_length:
        raise GpuCertificateError(
            "device chain is longer than a CA's path length allows",
            check=f"chain[{position}].path_length",
            expected=f"<= {constraints.path_length} CAs below",
            actual=cas_below,
        )
    usage = _key_usage(certificate)
    if usage is not None and not usage.key_cert_sign:
        raise GpuCertificateError(
            "device CA certificate may not sign certificates",
            check=f"chain[{position}].key_usage",
            expected="keyCertSign",
            actual="no keyCertSign",
        )


def _require_signing_leaf(leaf: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        is_ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise GpuCertificateError(
            "leaf certificate is a CA, not the report-signing key's certificate",
            check="leaf.basic_constraints",
            expected="CA:FALSE",
            actual="CA:TRUE",
        )
    usage = _key_usage(leaf)
    if usage is not None and not usage.digital_signature:
        raise GpuCertificateError(
            "leaf certificate's key may not sign",
            check="leaf.key_usage",
            expected="digitalSignature",
            actual="no digitalSignature",
        )
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise GpuCertificateError(
            "leaf key is not an ECDSA P-384 key",
            check="leaf.public_key",
            expected="secp384r1",
            actual=getattr(getattr(key, "curve", None), "name", type(key).__name__),
        )
    return key


def _key_usage(certificate: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
