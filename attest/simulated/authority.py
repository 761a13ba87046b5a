"""The simulated attestation authority: a root CA, a PCK chain and a TCB signing certificate,
all generated here and kept in a directory so that clients can keep trusting the same root.

Directory layout (created 0700; private keys 0600, refused on load if group/other can read):

    authority.json            format version, root fingerprint, platform parameters (written last)
    root-ca.pem               SIMULATED SGX Root CA (self-signed): what a verifier must pin
    root-ca.key.pem
    pck-platform-ca.pem       SIMULATED SGX PCK Platform CA, issued by the root
    pck-platform-ca.key.pem
    pck.pem                   SIMULATED SGX PCK Certificate with the SGX extension
    pck.key.pem               signs the QE report
    tcb-signing.pem           SIMULATED SGX TCB Signing, issued by the root
    tcb-signing.key.pem       signs TCB info and QE identity
    attestation.key.pem       the simulated quoting enclave's attestation key (signs quotes)

There is no separate "QE key" in DCAP: the PCK key signs the QE report, which binds the
attestation key. Every subject says SIMULATED, and nothing here chains to Intel's root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from pydantic import BaseModel, ConfigDict, ValidationError

from attest.errors import AuthorityStoreError
from attest.pck import SGX_EXTENSION_OID
from attest.simulated.pki import AuthorityCertificates, AuthorityKeys, issue_certificates
from attest.simulated.platform import SimulatedPlatform

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "authority.json"

# (file stem, AuthorityKeys field, AuthorityCertificates field or None)
_FILES = (
    ("root-ca", "root", "root"),
    ("pck-platform-ca", "pck_platform_ca", "pck_platform_ca"),
    ("pck", "pck", "pck"),
    ("tcb-signing", "tcb_signing", "tcb_signing"),
    ("attestation", "attestation", None),
)


def _platform_to_json(platform: SimulatedPlatform) -> dict[str, Any]:
    return {
        name: value.hex() if isinstance(value, bytes) else value
        for name, value in asdict(platform).items()
    }


def _platform_from_json(values: dict[str, Any]) -> SimulatedPlatform:
    """Rebuild the platform; SimulatedPlatform itself checks every size and range."""
    converted: dict[str, Any] = {}
    for name, value in values.items():
        kind = SimulatedPlatform.__dataclass_fields__.get(name)
        if kind is None:
            raise ValueError(f"unknown platform field {name!r}")
        if kind.type in ("bytes", bytes):
            converted[name] = bytes.fromhex(value)
        elif isinstance(value, list):
            converted[name] = tuple(value)
        else:
            converted[name] = value
    return SimulatedPlatform(**converted)


class _ManifestJson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: int
    created: str
    root_sha256: str
    platform: dict[str, Any]


class SimulatedAuthority:
    """Keys, certificates and platform parameters of the simulated authority.

    Build with `create`, `load` or `load_or_create`; quotes come from
    `attest.simulated.SimulatedQuoteProvider`, collateral from `attest.simulated.collateral`.
    """

    def __init__(
        self,
        directory: Path,
        platform: SimulatedPlatform,
        keys: AuthorityKeys,
        certificates: AuthorityCertificates,
    ) -> None:
        self.directory = directory
        self.platform = platform
        self.keys = keys
        self.certificates = certificates
        # Quotes carry the chain as DER inside PEM; encode it once.
        self.pck_chain_der = tuple(
            c.public_bytes(serialization.Encoding.DER) for c in self.pck_chain
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path | str,
        *,
        now: dt.datetime,
        platform: SimulatedPlatform | None = None,
    ) -> SimulatedAuthority:
        """Generate a new authority into `directory`, which must be absent or empty."""
        directory = Path(directory)
        platform = platform or SimulatedPlatform()
        require_aware(now)
        if directory.exists() and any(directory.iterdir()):
            raise AuthorityStoreError(
                f"{directory} is not empty; refusing to overwrite an authority that clients "
                "may trust (load it, or remove the directory to start over)",
                check="authority directory",
            )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = AuthorityKeys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(5)))
        certificates = issue_certificates(keys, platform, now)
        authority = cls(directory, platform, keys, certificates)
        authority._save(now)
        logger.info(
            "created simulated attestation authority in %s (root SHA-256 %s)",
            directory,
            authority.root_sha256,
        )
        return authority

    @classmethod
    def load(cls, directory: Path | str) -> SimulatedAuthority:
        """Load an authority, checking permissions, key/certificate pairs and the chains."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise AuthorityStoreError(
                f"{directory} holds no simulated authority ({MANIFEST} missing; an interrupted "
                "creation leaves it out)",
                check="authority manifest",
            )
        try:
            manifest = _ManifestJson.model_validate_json(manifest_path.read_bytes())
        except ValidationError as exc:
            raise AuthorityStoreError(
                f"{manifest_path} is malformed: {exc}", check="authority manifest"
            ) from exc
        if manifest.format != FORMAT_VERSION:
            raise AuthorityStoreError(
                "unsupported authority format",
                check="authority format",
                expected=FORMAT_VERSION,
                actual=manifest.format,
            )
        try:
            platform = _platform_from_json(manifest.platform)
        except (TypeError, ValueError) as exc:
            raise AuthorityStoreError(
                f"{manifest_path}: {exc}", check="authority platform"
            ) from exc
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        certificates: dict[str, x509.Certificate] = {}
        for stem, key_name, cert_name in _FILES:
            keys[key_name] = load_key(directory / f"{stem}.key.pem")
            if cert_name is not None:
                certificate = load_certificate(directory / f"{stem}.pem")
                if _public_der(certificate.public_key()) != _public_der(
                    keys[key_name].public_key()
                ):
                    raise AuthorityStoreError(
                        f"{stem}.pem does not certify {stem}.key.pem", check="key pair"
                    )
                certificates[cert_name] = certificate
        authority = cls(
            directory, platform, AuthorityKeys(**keys), AuthorityCertificates(**certificates)
        )
        authority._check_consistency(manifest.root_sha256)
        return authority

    @classmethod
    def load_or_create(
        cls,
        directory: Path | str,
        *,
        now: dt.datetime,
        platform: SimulatedPlatform | None = None,
    ) -> SimulatedAuthority:
        """Load the authority in `directory`, or create one there if the directory is empty."""
        directory = Path(directory)
        if (directory / MANIFEST).exists():
            authority = cls.load(directory)
            if platform is not None and platform != authority.platform:
                raise AuthorityStoreError(
                    "the stored authority was created for other platform parameters",
                    check="authority platform",
                )
            return authority
        return cls.create(directory, now=now, platform=platform)

    # -- what verifiers and builders need ---------------------------------------------------

    @property
    def root_certificate(self) -> x509.Certificate:
        return self.certificates.root

    @property
    def root_der(self) -> bytes:
        return self.certificates.root.public_bytes(serialization.Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self.certificates.root.public_bytes(serialization.Encoding.PEM)

    @property
    def root_sha256(self) -> str:
        return hashlib.sha256(self.root_der).hexdigest()

    @property
    def pck_chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf first: PCK certificate, PCK Platform CA, root (the order quotes carry)."""
        c = self.certificates
        return (c.pck, c.pck_platform_ca, c.root)

    @property
    def tcb_signing_chain(self) -> tuple[x509.Certificate, ...]:
        return (self.certificates.tcb_signing, self.certificates.root)

    # -- persistence ------------------------------------------------------------------------

    def _save(self, now: dt.datetime) -> None:
        for stem, key_name, cert_name in _FILES:
            key: ec.EllipticCurvePrivateKey = getattr(self.keys, key_name)
            write_atomically(
                self.directory / f"{stem}.key.pem",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                mode=0o600,
            )
            if cert_name is not None:
                certificate: x509.Certificate = getattr(self.certificates, cert_name)
                write_atomically(
                    self.directory / f"{stem}.pem",
                    certificate.public_bytes(serialization.Encoding.PEM),
                    mode=0o644,
                )
        manifest = _ManifestJson(
            format=FORMAT_VERSION,
            created=iso_time(now),
            root_sha256=self.root_sha256,
            platform=_platform_to_json(self.platform),
        )
        # Last: its presence marks a complete authority.
        write_atomically(
            self.directory / MANIFEST,
            json.dumps(manifest.model_dump(), indent=2).encode() + b"\n",
            mode=0o644,
        )

    def _check_consistency(self, recorded_root_sha256: str) -> None:
        """Chains intact, subjects SIMULATED, the PCK extension describing the platform, and
        the root the one recorded at creation."""
        self._check_chains()
        try:
            sgx_extension = self.certificates.pck.extensions.get_extension_for_oid(
                x509.ObjectIdentifier(SGX_EXTENSION_OID)
            ).value
        except x509.ExtensionNotFound:
            sgx_extension = None
        if (
            not isinstance(sgx_extension, x509.UnrecognizedExtension)
            or sgx_extension.value != self.platform.sgx_extension()
        ):
            raise AuthorityStoreError(
                f"pck.pem's SGX extension does not describe the platform in {MANIFEST}",
                check="pck sgx extension",
            )
        if self.root_sha256 != recorded_root_sha256:
            raise AuthorityStoreError(
                "root certificate differs from the one recorded at creation",
                check="root fingerprint",
                expected=recorded_root_sha256,
                actual=self.root_sha256,
            )

    def _check_chains(self) -> None:
        c = self.certificates
        links = (
            ("root-ca.pem", c.root, c.root),
            ("pck-platform-ca.pem", c.pck_platform_ca, c.root),
            ("pck.pem", c.pck, c.pck_platform_ca),
            ("tcb-signing.pem", c.tcb_signing, c.root),
        )
        for name, certificate, issuer in links:
            try:
                certificate.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise AuthorityStoreError(
                    f"{name} is not issued by {issuer.subject.rfc4514_string()}: {exc}",
                    check="certificate chain",
                ) from exc
            if "SIMULATED" not in certificate.subject.rfc4514_string():
                raise AuthorityStoreError(
                    f"{name} does not say SIMULATED in its subject", check="certificate subject"
                )


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_key(
    path: Path, curve: type[ec.EllipticCurve] = ec.SECP256R1, *, prefix: str = ""
) -> ec.EllipticCurvePrivateKey:
    """A private key of `curve` from a PEM file only its owner can read. Check names carry
    `prefix` (the GPU authority's are "gpu ...")."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise AuthorityStoreError(
            f"cannot read {path}: {exc.strerror or exc}", check=f"{prefix}authority file"
        ) from None
    if mode & 0o077:
        raise AuthorityStoreError(
            f"{path} is readable by group or others",
            check=f"{prefix}key file permissions",
            expected="0600",
            actual=oct(mode),
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuthorityStoreError(
            f"{path} is not a PEM private key", check=f"{prefix}key file"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
        raise AuthorityStoreError(
            f"{path} is not a {curve.name} key", check=f"{prefix}key file"
        )
    return key


def load_certificate(path: Path, *, prefix: str = "") -> x509.Certificate:
    """A PEM certificate file of an authority's store."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise AuthorityStoreError(
            f"cannot read {path}: {exc.strerror or exc}", check=f"{prefix}authority file"
        ) from None
    except ValueError:
        raise AuthorityStoreError(
            f"{path} is not a PEM certificate", check=f"{prefix}certificate file"
        ) from None


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write via a temporary file in the same directory, created with `mode`, then rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")


def iso_time(moment: dt.datetime) -> str:
    """UTC, second precision, "Z": the timestamp format of PCS collateral."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
