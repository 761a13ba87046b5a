"""A simulated NVIDIA GPU, so that the GPU verification path runs in development and CI.

`SimulatedGpuAuthority` holds a device chain shaped like a Hopper GPU's (see
`attest.nvidia.chain`), every subject saying SIMULATED, all P-384:

    SIMULATED GH100 A01 GSP FMC LF      leaf: signs reports; DICE extension with the FWID
    SIMULATED GH100 A01 GSP BROM
    SIMULATED GH100 Provisioner ICA 1
    SIMULATED GH100 Identity
    SIMULATED Device Identity CA        root, self-signed: what a verifier must be given

kept in memory (`generate`) or in a directory (`create`, `load`, `load_or_create`; the
directory 0700, keys 0600 and refused on load if group or others can read them).
`SimulatedGpu.evidence(nonce)` builds a GET_MEASUREMENTS request and response with the product's
own serializers (`attest.nvidia.report`, `attest.nvidia.opaque`) and signs them with the leaf
key over `GpuReport.signed_bytes`, the span the verifier checks. `SimulatedGpu.collateral(now)`
gives the matching reference measurements and "good" OCSP statuses. The evidence verifies only
against the simulated root passed explicitly, and then says `simulated`; against NVIDIA's root
the chain check `chain.root` refuses it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attest.errors import AuthorityStoreError
from attest.nvidia.chain import DICE_TCB_INFO_OID, FWID_SIZE, SHA384_OID
from attest.nvidia.collateral import (
    CertificateStatus,
    GpuCollateral,
    OcspStatus,
    ReferenceMeasurement,
    ReferenceMeasurements,
)
from attest.nvidia.opaque import OpaqueData, OpaqueField, OpaqueFieldType
from attest.nvidia.report import (
    ALL_MEASUREMENTS,
    NONCE_SIZE,
    SIGNATURE_REQUESTED,
    SIGNATURE_SIZE,
    SPDM_VERSION_11,
    GpuReport,
    MeasurementBlock,
    MeasurementRequest,
    MeasurementsResponse,
)
from attest.roots import TrustRoot
from attest.simulated.authority import (
    load_certificate,
    load_key,
    require_aware,
    write_atomically,
)
from attest.simulated.der_writer import integer, octet_string, oid, sequence

ORGANIZATION = "SIMULATED GPU authority (development only)"
# Leaf first, root last: the order of a GPU's chain.
CHAIN_NAMES = (
    "SIMULATED GH100 A01 GSP FMC LF",
    "SIMULATED GH100 A01 GSP BROM",
    "SIMULATED GH100 Provisioner ICA 1",
    "SIMULATED GH100 Identity",
    "SIMULATED Device Identity CA",
)
_FILE_STEMS = ("leaf", "brom", "provisioner-ica", "identity", "root-ca")
MANIFEST = "gpu-authority.json"
FORMAT_VERSION = 1

CA_LIFETIME = dt.timedelta(days=25 * 365)
LEAF_LIFETIME = dt.timedelta(days=7 * 365)
BACKDATE = dt.timedelta(days=1)  # a verifier whose clock is slightly behind still accepts
OCSP_LIFETIME = dt.timedelta(days=7)

# The firmware the leaf certifies: a fixed SHA-384 so that every simulated GPU agrees.
SIMULATED_FWID = hashlib.sha384(b"SIMULATED GSP FMC firmware").digest()
DEFAULT_DRIVER_VERSION = "550.90.07"
DEFAULT_VBIOS_VERSION = bytes.fromhex("009f009601000000")  # 96.00.9f.00.01
DEFAULT_MEASUREMENT_COUNT = 64  # a Hopper report's
DIGEST_VALUE_TYPE = 0x01  # the value type of the real Hopper report's blocks
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


def simulated_measurements(count: int = DEFAULT_MEASUREMENT_COUNT) -> dict[int, bytes]:
    """Indices 1..count, each a SHA-384 of its own label (stable across runs)."""
    return {
        index: hashlib.sha384(f"SIMULATED GPU measurement {index}".encode()).digest()
        for index in range(1, count + 1)
    }


class SimulatedGpuAuthority:
    """The simulated device chain and its keys, leaf first (see the module docstring)."""

    def __init__(
        self,
        keys: tuple[ec.EllipticCurvePrivateKey, ...],
        certificates: tuple[x509.Certificate, ...],
        directory: Path | None = None,
    ) -> None:
        if len(keys) != len(CHAIN_NAMES) or len(certificates) != len(CHAIN_NAMES):
            raise ValueError(f"a simulated GPU chain has {len(CHAIN_NAMES)} keys and certificates")
        self.keys = keys
        self.certificates = certificates
        self.directory = directory

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def generate(cls, *, now: dt.datetime) -> SimulatedGpuAuthority:
        """A new authority in memory only."""
        require_aware(now)
        keys = tuple(ec.generate_private_key(ec.SECP384R1()) for _ in CHAIN_NAMES)
        return cls(keys, _issue_chain(keys, now))

    @classmethod
    def create(cls, directory: Path | str, *, now: dt.datetime) -> SimulatedGpuAuthority:
        """A new authority, saved into `directory`, which must be absent or empty."""
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()):
            raise AuthorityStoreError(
                f"{directory} is not empty; refusing to overwrite a GPU authority that clients "
                "may trust",
                check="gpu authority directory",
            )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        generated = cls.generate(now=now)
        authority = cls(generated.keys, generated.certificates, directory)
        authority._save(directory)
        return authority

    @classmethod
    def load(cls, directory: Path | str) -> SimulatedGpuAuthority:
        """Load an authority, checking permissions, key/certificate pairs and the chain."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_bytes())
        except (OSError, ValueError) as exc:
            raise AuthorityStoreError(
                f"{directory} holds no readable {MANIFEST} (an interrupted creation leaves it "
                f"out): {exc}",
                check="gpu authority manifest",
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise AuthorityStoreError(
                "unsupported GPU authority format",
                check="gpu authority format",
                expected=FORMAT_VERSION,
                actual=manifest.get("format") if isinstance(manifest, dict) else manifest,
            )
        keys = tuple(
            load_key(directory / f"{stem}.key.pem", ec.SECP384R1, prefix="gpu ")
            for stem in _FILE_STEMS
        )
        certificates = tuple(
            load_certificate(directory / f"{stem}.pem", prefix="gpu ") for stem in _FILE_STEMS
        )
        authority = cls(keys, certificates, directory)
        authority._check_consistency(manifest.get("root_sha256"))
        return authority

    @classmethod
    def load_or_create(cls, directory: Path | str, *, now: dt.datetime) -> SimulatedGpuAuthority:
        directory = Path(directory)
        if (directory / MANIFEST).exists():
            return cls.load(directory)
        return cls.create(directory, now=now)

    # -- what verifiers and the simulated GPU need ------------------------------------------

    @property
    def leaf_key(self) -> ec.EllipticCurvePrivateKey:
        return self.keys[0]

    @property
    def root(self) -> TrustRoot:
        """The trust root a verifier must be given explicitly to accept simulated evidence."""
        return TrustRoot(self.certificates[-1].public_bytes(serialization.Encoding.DER))

    @property
    def chain_pem(self) -> bytes:
        """Leaf first, root last, as the driver returns a GPU's chain."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)

    @property
    def certificate_sha256(self) -> tuple[str, ...]:
        return tuple(
            hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
            for c in self.certificates
        )

    # -- persistence ------------------------------------------------------------------------

    def _save(self, directory: Path) -> None:
        for stem, key, certificate in zip(_FILE_STEMS, self.keys, self.certificates, strict=True):
            write_atomically(
                directory / f"{stem}.key.pem",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                mode=0o600,
            )
            write_atomically(
                directory / f"{stem}.pem",
                certificate.public_bytes(serialization.Encoding.PEM),
                mode=0o644,
            )
        manifest = {"format": FORMAT_VERSION, "root_sha256": self.root.sha256}
        # Last: its presence marks a complete authority.
        write_atomically(
            directory / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n", mode=0o644
        )

    def _check_consistency(self, recorded_root_sha256: object) -> None:
        for stem, key, certificate in zip(_FILE_STEMS, self.keys, self.certificates, strict=True):
            if _public_der(certificate.public_key()) != _public_der(key.public_key()):
                raise AuthorityStoreError(
                    f"{stem}.pem does not certify {stem}.key.pem", check="gpu key pair"
                )
            if "SIMULATED" not in certificate.subject.rfc4514_string():
                raise AuthorityStoreError(
                    f"{stem}.pem does not say SIMULATED in its subject",
                    check="gpu certificate subject",
                )
        issuers = (*self.certificates[1:], self.certificates[-1])
        for stem, certificate, issuer in zip(_FILE_STEMS, self.certificates, issuers, strict=True):
            try:
                certificate.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise AuthorityStoreError(
                    f"{stem}.pem is not issued by {issuer.subject.rfc4514_string()}: {exc}",
                    check="gpu certificate chain",
                ) from None
        if self.root.sha256 != recorded_root_sha256:
            raise AuthorityStoreError(
                "root certificate differs from the one recorded at creation",
                check="gpu root fingerprint",
                expected=recorded_root_sha256,
                actual=self.root.sha256,
            )


@dataclass(frozen=True)
class SimulatedGpu:
    """A simulated Hopper GPU: what its report says, signed by the authority's leaf key."""

    authority: SimulatedGpuAuthority = field(compare=False, repr=False)
    measurements: dict[int, bytes] = field(default_factory=simulated_measurements)
    driver_version: str = DEFAULT_DRIVER_VERSION
    vbios_version: bytes = DEFAULT_VBIOS_VERSION

    def evidence(self, nonce: bytes) -> tuple[bytes, bytes]:
        """(report bytes, chain PEM) for the verifier's 32-byte `nonce`."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, not {len(nonce)}")
        request = MeasurementRequest(
            SPDM_VERSION_11, SIGNATURE_REQUESTED, ALL_MEASUREMENTS, bytes(nonce), 0
        )
        blocks = tuple(
            MeasurementBlock(index, DIGEST_VALUE_TYPE, value)
            for index, value in sorted(self.measurements.items())
        )
        opaque = OpaqueData(
            (
                OpaqueField(OpaqueFieldType.DRIVER_VERSION, self.driver_version.encode() + b"\0"),
                OpaqueField(OpaqueFieldType.VBIOS_VERSION, self.vbios_version),
                OpaqueField(OpaqueFieldType.PROJECT, b"SIMULATED\0"),
                OpaqueField(OpaqueFieldType.FWID, SIMULATED_FWID),
            )
        )
        unsigned = MeasurementsResponse(
            SPDM_VERSION_11, 0, 0, blocks, os.urandom(NONCE_SIZE), opaque, bytes(SIGNATURE_SIZE)
        )
        # Sign exactly what the verifier checks: request || response without its signature.
        signed_bytes = GpuReport(request, unsigned).signed_bytes
        r, s = decode_dss_signature(self.authority.leaf_key.sign(signed_bytes, _ECDSA_SHA384))
        half = SIGNATURE_SIZE // 2
        signature = r.to_bytes(half, "big") + s.to_bytes(half, "big")
        report = GpuReport(request, _with_signature(unsigned, signature))
        return report.to_bytes(), self.authority.chain_pem

    def collateral(self, now: dt.datetime) -> GpuCollateral:
        """Reference measurements equal to this GPU's, and "good" OCSP for its device CAs,
        current from an hour before `now` for `OCSP_LIFETIME`."""
        require_aware(now)
        this_update = now - dt.timedelta(hours=1)
        fingerprints = self.authority.certificate_sha256
        ocsp = tuple(
            CertificateStatus(sha256, OcspStatus.GOOD, this_update, this_update + OCSP_LIFETIME)
            for sha256 in fingerprints[1:-1]  # the CAs between leaf and root, as verify applies
        )
        reference = ReferenceMeasurements(
            tuple(
                ReferenceMeasurement(index, (value,))
                for index, value in sorted(self.measurements.items())
            ),
            source="SIMULATED RIM",
        )
        return GpuCollateral(ocsp=ocsp, reference_measurements=reference)


def _with_signature(response: MeasurementsResponse, signature: bytes) -> MeasurementsResponse:
    return MeasurementsResponse(
        response.spdm_version,
        response.param1,
        response.param2,
        response.blocks,
        response.responder_nonce,
        response.opaque,
        signature,
    )


def dice_tcb_info(fwid: bytes) -> bytes:
    """SEQUENCE {version, SEQUENCE {OID SHA-384, OCTET STRING fwid}}: the layout `leaf_fwid`
    reads (the FWID pair last)."""
    if len(fwid) != FWID_SIZE:
        raise ValueError(f"FWID must be {FWID_SIZE} bytes, not {len(fwid)}")
    return sequence(integer(1), sequence(oid(SHA384_OID), octet_string(fwid)))


def _issue_chain(
    keys: tuple[ec.EllipticCurvePrivateKey, ...], now: dt.datetime
) -> tuple[x509.Certificate, ...]:
    """Root first while issuing, returned leaf first. Path lengths as tight as the chain."""
    not_before = now.replace(microsecond=0) - BACKDATE
    issued: list[x509.Certificate] = []
    issuer_name = _name(CHAIN_NAMES[-1])
    issuer_key = keys[-1]
    for position in reversed(range(len(CHAIN_NAMES))):
        is_leaf = position == 0
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(CHAIN_NAMES[position]))
            .issuer_name(issuer_name)
            .public_key(keys[position].public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + (LEAF_LIFETIME if is_leaf else CA_LIFETIME))
            .add_extension(
                x509.BasicConstraints(
                    ca=not is_leaf, path_length=None if is_leaf else position - 1
                ),
                critical=True,
            )
            .add_extension(_key_usage(ca=not is_leaf), critical=True)
        )
        if is_leaf:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(DICE_TCB_INFO_OID, dice_tcb_info(SIMULATED_FWID)),
                critical=False,
            )
        issued.append(builder.sign(issuer_key, hashes.SHA384()))
        issuer_name, issuer_key = _name(CHAIN_NAMES[position]), keys[position]
    return tuple(reversed(issued))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
