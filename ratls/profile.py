"""RA-TLS certificate profile v1: what the certificate carries and how REPORTDATA binds its key.

Profile v1 (docs/design.md, compatible with the public Privasys client profile):

* key: ECDSA P-256; self-signed leaf, ECDSA-with-SHA256;
* notBefore truncated to the minute, so that a verifier can recompute REPORTDATA from the
  certificate alone; validity 24 h by default;
* SAN: the configured DNS names and IP addresses;
* extension 1.2.840.113741.1.5.5.1.6 (non-critical): the raw TDX quote;
* extension 1.3.6.1.4.1.65230.3.5.5 (MODEL_DIGEST, non-critical): the served model's dm-verity
  root hash, when exactly one model is served; absent otherwise;
* extension 1.3.6.1.4.1.65230.3.5.6 (MODEL_DIGESTS, non-critical): every served model, named,
  as DER (`ratls.served_models`); absent when no model is served.

The served models and the extensions that carry them:

    served            MODEL_DIGEST        MODEL_DIGESTS
    none              absent              absent
    one, unnamed      its digest          absent           (before MODEL_DIGESTS; `model_digest=`)
    one, named        its digest          that one entry   (clients that read only MODEL_DIGEST
                                                            still see the model)
    2..16, named      absent              every entry

Any other combination is refused: both present but not the same single digest
(`model_digests.agreement`), or one MODEL_DIGESTS entry without MODEL_DIGEST
(`model_digest_extension`). So `RatlsCertificate.model_digest` is the model's digest when one
model is served and None otherwise (none, or several: read `models` then).

Why these OIDs: 1.3.6.1.4.1.65230 is Privasys' enterprise arc, and 3.5.<n> the arc its platform
leaves to each workload's own extensions; this profile took 3.5.5 for MODEL_DIGEST (read by
Privasys' client), and MODEL_DIGESTS takes the next number, 3.5.6, so that both model
extensions sit side by side in the one arc this workload defines (no public source we could
search gives 3.5.6 another meaning). MODEL_DIGESTS is DER, not raw bytes: a list needs a
structure, and a new OID keeps MODEL_DIGEST's meaning unchanged for existing readers.

The quote and MODEL_DIGEST use the **raw bytes as the extnValue contents**: the X.509 extnValue
OCTET STRING holds the quote (or the root hash) itself, with no inner DER wrapping, as in
Privasys' profile.

Each model load extends RTMR3 with one event of type MODEL_EVENT_TYPE whose data is the model's
digest; an unload re-issues the certificate without that model and measures nothing.

REPORTDATA (64 bytes):
* certificate mode: SHA-512( SHA-256(SubjectPublicKeyInfo DER) || notBefore as `YYYY-MM-DDTHH:MMZ` )
* nonce mode:       SHA-512( SHA-256(SubjectPublicKeyInfo DER) || nonce )
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ratls.errors import (
    CertificateError,
    CertificateFormatError,
    HostnameMismatchError,
    NonceError,
)
from ratls.served_models import (
    ServedModel,
    check_model_digest,
    decode_model_digests,
    encode_model_digests,
    served_models,
)

TDX_QUOTE_OID = x509.ObjectIdentifier("1.2.840.113741.1.5.5.1.6")
MODEL_DIGEST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.65230.3.5.5")
MODEL_DIGESTS_OID = x509.ObjectIdentifier("1.3.6.1.4.1.65230.3.5.6")

# Each model load extends RTMR3 with one event of this type whose data is the model digest
# (the same root hash as MODEL_DIGEST); the appliance writes it, nonce-mode verifiers check it.
MODEL_RTMR = 3
MODEL_EVENT_TYPE = "appliance.model.v1"

NOT_BEFORE_FORMAT = "%Y-%m-%dT%H:%MZ"
DEFAULT_VALIDITY = timedelta(hours=24)

NONCE_MIN_SIZE = 16
NONCE_MAX_SIZE = 64
# Bounds what a verifier reads from an untrusted certificate; real quotes are 5-8 KB.
MAX_QUOTE_SIZE = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A SAN iPAddress of 8 or 32 octets decodes as a network; it never matches a host address.
SanIPAddress = IPAddress | ipaddress.IPv4Network | ipaddress.IPv6Network

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def truncate_to_minute(moment: datetime) -> datetime:
    """The certificate's notBefore for `moment`: UTC, seconds and microseconds dropped."""
    if moment.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_report_data(spki: bytes, not_before: datetime) -> bytes:
    """REPORTDATA that binds a certificate's key in certificate mode (the notBefore formula)."""
    stamp = truncate_to_minute(not_before).strftime(NOT_BEFORE_FORMAT).encode("ascii")
    return hashlib.sha512(hashlib.sha256(spki).digest() + stamp).digest()


def nonce_report_data(spki: bytes, nonce: bytes) -> bytes:
    """REPORTDATA that binds a certificate's key and a client's nonce (nonce mode)."""
    check_nonce(nonce)
    return hashlib.sha512(hashlib.sha256(spki).digest() + nonce).digest()


def check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes):
        raise NonceError("nonce must be bytes", check="nonce_type", actual=type(nonce).__name__)
    if not NONCE_MIN_SIZE <= len(nonce) <= NONCE_MAX_SIZE:
        raise NonceError(
            "nonce length out of range",
            check="nonce_length",
            expected=f"{NONCE_MIN_SIZE}..{NONCE_MAX_SIZE} bytes",
            actual=f"{len(nonce)} bytes",
        )


def normalize_dns_name(name: str) -> str:
    """Lower-case, trailing dot dropped; raises ValueError unless it is an LDH host name."""
    host = name.lower().removesuffix(".")
    if not host or len(host) > 253 or not all(_DNS_LABEL.match(part) for part in host.split(".")):
        raise ValueError(f"not a DNS host name: {name!r}")
    return host


@dataclass(frozen=True)
class SubjectNames:
    """The names a certificate is issued for. At least one, so a client can check the host."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dns_names", tuple(normalize_dns_name(n) for n in self.dns_names))
        object.__setattr__(
            self, "ip_addresses", tuple(ipaddress.ip_address(a) for a in self.ip_addresses)
        )
        if not self.dns_names and not self.ip_addresses:
            raise ValueError("an RA-TLS certificate needs at least one DNS name or IP address")

    @classmethod
    def parse(cls, names: Sequence[str]) -> SubjectNames:
        """From strings such as `["appliance.example", "10.0.0.5", "::1"]`."""
        dns: list[str] = []
        ips: list[IPAddress] = []
        for name in names:
            try:
                ips.append(ipaddress.ip_address(name.strip("[]")))
            except ValueError:
                dns.append(name)
        return cls(tuple(dns), tuple(ips))


def build_certificate(
    private_key: ec.EllipticCurvePrivateKey,
    *,
    names: SubjectNames,
    quote: bytes | None,
    model_digest: bytes | None = None,
    models: Iterable[ServedModel] = (),
    not_before: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> x509.Certificate:
    """A self-signed profile-v1 leaf serving `models` (any order), or the one unnamed model
    `model_digest`. `quote=None` only exists so tests can build bad evidence."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError(f"profile v1 keys are P-256, not {private_key.curve.name}")
    served = served_models(models_or_digest(models, model_digest))
    not_before = truncate_to_minute(not_before)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RA-TLS profile v1"),
            x509.NameAttribute(NameOID.COMMON_NAME, (names.dns_names or ("ra-tls",))[0]),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns_names]
    sans += [x509.IPAddress(a) for a in names.ip_addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + validity)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if quote is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TDX_QUOTE_OID, quote), critical=False
        )
    for oid, value in _model_extensions(served):
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(private_key, hashes.SHA256())


def models_or_digest(
    models: Iterable[ServedModel], model_digest: bytes | None
) -> tuple[ServedModel, ...]:
    """The served models from either form of the issuing API (not both): the models, or the one
    unnamed model `model_digest` (None: no model)."""
    listed = tuple(models)
    if model_digest is None:
        return listed
    if listed:
        raise ValueError("give the served models or one model digest, not both")
    return (ServedModel(None, model_digest),)


def _model_extensions(served: Sequence[ServedModel]) -> list[tuple[x509.ObjectIdentifier, bytes]]:
    """MODEL_DIGEST for exactly one model (the form clients that predate MODEL_DIGESTS read),
    MODEL_DIGESTS for named ones (`served` is canonical: an unnamed model is alone)."""
    extensions = []
    if len(served) == 1:
        extensions.append((MODEL_DIGEST_OID, served[0].digest))
    if served and served[0].name is not None:
        extensions.append((MODEL_DIGESTS_OID, encode_model_digests(served)))
    return extensions


@dataclass(frozen=True)
class RatlsCertificate:
    """A parsed profile-v1 certificate: what a verifier reads from the server's leaf."""

    certificate: x509.Certificate = field(repr=False)
    der: bytes = field(repr=False)
    fingerprint: bytes  # SHA-256 of the DER
    spki: bytes = field(repr=False)
    quote: bytes = field(repr=False)
    # The one served model's digest (MODEL_DIGEST); None with no model and with several.
    model_digest: bytes | None
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[SanIPAddress, ...]
    # Every served model, sorted by name; one unnamed model for a MODEL_DIGEST-only certificate.
    models: tuple[ServedModel, ...] = ()

    def __post_init__(self) -> None:
        # A certificate built by hand with only `model_digest` serves that one, unnamed model.
        if not self.models and self.model_digest is not None:
            object.__setattr__(self, "models", (ServedModel(None, self.model_digest),))

    @property
    def report_data(self) -> bytes:
        """The REPORTDATA a quote must carry to bind this certificate in certificate mode."""
        return certificate_report_data(self.spki, self.not_before)

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_certificate(der: bytes) -> RatlsCertificate:
    """Parse a server leaf as profile v1 (structure only: no signature, time or binding checks).

    Raises CertificateFormatError naming what is missing or malformed.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
    except ValueError as exc:
        raise CertificateFormatError(
            f"certificate is not valid DER X.509: {exc}", check="der"
        ) from None
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise CertificateFormatError(
            "certificate key is not ECDSA P-256",
            check="key_type",
            expected="EC secp256r1",
            actual=_key_name(public_key),
        )
    quote = _raw_extension(extensions, TDX_QUOTE_OID, "quote_extension")
    if quote is None:
        raise CertificateFormatError(
            f"certificate has no TDX quote extension {TDX_QUOTE_OID.dotted_string}",
            check="quote_extension",
        )
    if not quote or len(quote) > MAX_QUOTE_SIZE:
        raise CertificateFormatError(
            "quote extension size out of range",
            check="quote_extension",
            expected=f"1..{MAX_QUOTE_SIZE} bytes",
            actual=f"{len(quote)} bytes",
        )
    model_digest, models = _served_models(extensions)
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = (), ()
    return RatlsCertificate(
        certificate=cert,
        der=bytes(der),
        fingerprint=hashlib.sha256(der).digest(),
        spki=spki_der(public_key),
        quote=quote,
        model_digest=model_digest,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        models=models,
    )


def _served_models(
    extensions: x509.Extensions,
) -> tuple[bytes | None, tuple[ServedModel, ...]]:
    """MODEL_DIGEST and the served models, by the table of the module docstring."""
    model_digest = _raw_extension(extensions, MODEL_DIGEST_OID, "model_digest_extension")
    if model_digest is not None:
        check_model_digest(model_digest)
    listed = _raw_extension(extensions, MODEL_DIGESTS_OID, "model_digests_extension")
    if listed is None:
        unnamed = () if model_digest is None else (ServedModel(None, model_digest),)
        return model_digest, unnamed
    models = decode_model_digests(listed)
    if model_digest is None and len(models) == 1:
        raise CertificateFormatError(
            "a certificate serving one model carries MODEL_DIGEST too",
            check="model_digest_extension",
            expected=f"{MODEL_DIGEST_OID.dotted_string} present",
            actual="absent",
        )
    if model_digest is not None and (len(models) != 1 or models[0].digest != model_digest):
        raise CertificateFormatError(
            "MODEL_DIGEST and MODEL_DIGESTS disagree",
            check="model_digests.agreement",
            expected=[m.digest.hex() for m in models] if len(models) == 1
            else f"no MODEL_DIGEST with {len(models)} models",
            actual=model_digest,
        )
    return model_digest, models


def check_certificate(cert: RatlsCertificate, *, now: datetime) -> None:
    """The certificate's own checks: self-signature by its key, then validity at `now`.

    The self-signature matters: it is what makes the model digest extension the TD's statement
    (only the TD holds the key that REPORTDATA binds).
    """
    try:
        cert.certificate.verify_directly_issued_by(cert.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"certificate is not self-signed by its own key: {exc or type(exc).__name__}",
            check="self_signature",
        ) from None
    if now < cert.not_before:
        raise CertificateError(
            "certificate is not yet valid",
            check="not_before",
            expected=f"<= {now.isoformat()}",
            actual=cert.not_before.isoformat(),
        )
    if now > cert.not_after:
        raise CertificateError(
            "certificate has expired",
            check="not_after",
            expected=f">= {now.isoformat()}",
            actual=cert.not_after.isoformat(),
        )


def _raw_extension(
    extensions: x509.Extensions, oid: x509.ObjectIdentifier, check: str
) -> bytes | None:
    try:
        value = extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateFormatError(f"extension {oid.dotted_string} is not raw bytes", check=check)
    return value.value


def _key_name(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    return type(public_key).__name__


def check_hostname(cert: RatlsCertificate, host: str) -> None:
    """The host a client connected to must be one of the certificate's SANs.

    Rules: an IP address (v4 or v6, brackets allowed) matches only IP SANs, by value; a DNS name
    matches only DNS SANs, exactly, case-insensitively, trailing dot ignored. No wildcards (the
    issuer never writes them) and no fallback to the subject CN.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        matched = address in cert.ip_addresses
    else:
        matched = host.lower().removesuffix(".") in cert.dns_names
    if not matched:
        sans = [*cert.dns_names, *(str(a) for a in cert.ip_addresses)]
        raise HostnameMismatchError(
            "host is not among the certificate's subject alternative names",
            check="hostname",
            expected=host,
            actual=sans,
        )
