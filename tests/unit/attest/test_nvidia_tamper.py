"""Changed GPU evidence fails, each change with its own error class and check.

Every single-byte change of the real Hopper report is refused, by parse or verify, with a class
allowed for the region it hits; then the named scenarios: another nonce, another GPU's chain, a
chain to another root (forged with `cryptography` around the real leaf key), certificates outside
their validity, DevTools mode, trailing data, and OCSP and reference-measurement collateral.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from nvidia_vectors import AFTER_EXPIRY, BEFORE_ICA, COCO, HOPPER, NOW, nvidia_root

from attest import errors
from attest.nvidia.collateral import (
    CertificateStatus,
    CheckState,
    GpuCcMode,
    GpuCollateral,
    OcspStatus,
    ReferenceMeasurement,
    ReferenceMeasurements,
)
from attest.nvidia.opaque import ITEM_HEADER_SIZE, OpaqueFieldType
from attest.nvidia.policy import GpuPolicy, validate_gpu
from attest.nvidia.report import (
    REQUEST_NONCE,
    REQUEST_SIZE,
    RESPONSE_HEADER_SIZE,
    SIGNATURE_SIZE,
    parse_gpu_report,
)
from attest.nvidia.verify import GpuVerifier, verify_gpu_evidence
from attest.policy import CheckOutcome
from attest.roots import TrustRoot

VERIFIER = GpuVerifier(nvidia_root())
RAW = HOPPER.raw
REPORT = parse_gpu_report(RAW)


def verify(raw: bytes = RAW, chain: bytes = HOPPER.chain, **kwargs):
    options = {"nonce": HOPPER.nonce, "now": NOW, "cc_mode": GpuCcMode.ON, **kwargs}
    return VERIFIER.verify(raw, chain, **options)


# --- every byte of the real report ---------------------------------------------------------------


def regions() -> dict[str, range]:
    """Named byte ranges of the Hopper report (absolute offsets)."""
    record = REQUEST_SIZE + RESPONSE_HEADER_SIZE
    nonce = record + sum(len(b.to_bytes()) for b in REPORT.response.blocks)
    opaque = nonce + 32 + 2
    fwid_item = next(
        i for i, item in enumerate(REPORT.opaque.fields) if item.type is OpaqueFieldType.FWID
    )
    fwid = opaque + sum(len(f.to_bytes()) for f in REPORT.opaque.fields[:fwid_item])
    signature = len(REPORT.signed_bytes)
    return {
        "request_header": range(REQUEST_NONCE.offset),
        "request_nonce": range(REQUEST_NONCE.offset, REQUEST_NONCE.end),
        "request_slot": range(REQUEST_NONCE.end, REQUEST_SIZE),
        "response_header": range(REQUEST_SIZE, record),
        "measurement_record": range(record, nonce),
        "responder_nonce": range(nonce, nonce + 32),
        "opaque_length": range(nonce + 32, opaque),
        "opaque_before_fwid": range(opaque, fwid + ITEM_HEADER_SIZE),
        "fwid": range(fwid + ITEM_HEADER_SIZE, fwid + ITEM_HEADER_SIZE + 48),
        "opaque_after_fwid": range(fwid + ITEM_HEADER_SIZE + 48, signature),
        "signature": range(signature, signature + SIGNATURE_SIZE),
    }


FORMAT, SIGNATURE = errors.GpuEvidenceFormatError, errors.GpuSignatureError
EXPECTED = {
    "request_header": (FORMAT,),
    "request_nonce": (SIGNATURE,),  # a nonce the GPU did not sign: the signature fails first
    "request_slot": (FORMAT,),
    "response_header": (FORMAT,),
    "measurement_record": (FORMAT, SIGNATURE),
    "responder_nonce": (SIGNATURE,),
    "opaque_length": (FORMAT,),
    "opaque_before_fwid": (FORMAT, SIGNATURE),
    "fwid": (errors.GpuCertificateError,),  # no longer the leaf's FWID
    "opaque_after_fwid": (FORMAT, SIGNATURE),
    "signature": (SIGNATURE,),
}


def test_regions_cover_the_report() -> None:
    covered = sorted(offset for r in regions().values() for offset in r)
    assert covered == list(range(len(RAW)))


@pytest.mark.parametrize("region", list(EXPECTED))
def test_every_byte_change_is_refused(region: str) -> None:
    for offset in regions()[region]:
        for mask in (0x01, 0x80):
            changed = bytearray(RAW)
            changed[offset] ^= mask
            with pytest.raises(errors.AttestError) as caught:
                verify(bytes(changed))
            assert isinstance(caught.value, EXPECTED[region]), (offset, mask, caught.value)


def test_byte_flip_in_signed_part_is_a_signature_error() -> None:
    changed = bytearray(RAW)
    changed[REQUEST_SIZE + RESPONSE_HEADER_SIZE + 10] ^= 0x01  # inside block 1's digest
    with pytest.raises(errors.GpuSignatureError) as caught:
        verify(bytes(changed))
    assert caught.value.check == "report.signature"


# --- scenarios -----------------------------------------------------------------------------------


def test_wrong_nonce() -> None:
    other = bytes(32)
    with pytest.raises(errors.GpuNonceError) as caught:
        verify(nonce=other)
    assert (caught.value.check, caught.value.expected, caught.value.actual) == (
        "request.nonce",
        other,
        HOPPER.nonce,
    )


def test_nonce_must_be_spdm_sized() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        verify(nonce=HOPPER.nonce + bytes(16))


def test_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(now=datetime(2025, 6, 1))


def test_another_gpus_chain_has_another_fwid() -> None:
    with pytest.raises(errors.GpuCertificateError) as caught:
        verify(chain=COCO.chain)
    assert caught.value.check == "leaf.fwid"


@pytest.mark.parametrize("now", [AFTER_EXPIRY, BEFORE_ICA], ids=["expired", "not_yet_valid"])
def test_certificates_outside_their_validity(now: datetime) -> None:
    with pytest.raises(errors.GpuCertificateValidityError) as caught:
        verify(now=now)
    assert caught.value.check.endswith(".validity")


def test_trailing_data() -> None:
    with pytest.raises(errors.GpuEvidenceFormatError) as caught:
        verify(RAW + b"\x01")
    assert caught.value.check == "trailing_data"
    assert verify(RAW + bytes(7)).report.padding == bytes(7)
    report = parse_gpu_report(RAW + b"\x01", unsafe_allow_trailing_data=True)
    assert verify(report).report.padding == b"\x01"


# A chain around the real leaf key (so the report's signature still verifies), under a root of
# our own: the certificates are ours, the key and the FWID extension are the GPU's.
def forged_chain(
    not_before: datetime = datetime(2024, 1, 1, tzinfo=UTC), days: int = 3650
) -> tuple[bytes, TrustRoot]:
    real_leaf = x509.load_pem_x509_certificates(HOPPER.chain)[0]
    root_key = ec.generate_private_key(ec.SECP384R1())
    ca_key = ec.generate_private_key(ec.SECP384R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test GPU Root")])
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test GPU CA")])
    not_after = not_before + timedelta(days=days)

    def certificate(subject, issuer, key, signer, ca: bool, extensions=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension in extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        return builder.sign(signer, hashes.SHA384())

    root = certificate(root_name, root_name, root_key.public_key(), root_key, ca=True)
    ca = certificate(ca_name, root_name, ca_key.public_key(), root_key, ca=True)
    kept = [e for e in real_leaf.extensions if e.oid.dotted_string == "2.23.133.5.4.1"]
    leaf = certificate(
        real_leaf.subject, ca_name, real_leaf.public_key(), ca_key, ca=False, extensions=kept
    )
    pems = b"".join(c.public_bytes(Encoding.PEM) for c in (leaf, ca, root))
    return pems, TrustRoot(root.public_bytes(Encoding.DER))


def test_chain_to_another_root_is_refused() -> None:
    pems, _ = forged_chain()
    with pytest.raises(errors.GpuCertificateError) as caught:
        verify(chain=pems)
    assert caught.value.check == "chain.root"


def test_chain_to_another_root_verifies_only_as_simulated() -> None:
    pems, root = forged_chain()
    verified = verify_gpu_evidence(RAW, pems, root=root, nonce=HOPPER.nonce, now=NOW)
    assert verified.simulated
    assert verified.root_sha256 == root.sha256 != nvidia_root().sha256
    # The real chain does not end in that root.
    with pytest.raises(errors.GpuCertificateError, match="trust root"):
        verify_gpu_evidence(RAW, HOPPER.chain, root=root, nonce=HOPPER.nonce, now=NOW)


def test_expired_forged_chain() -> None:
    pems, root = forged_chain(datetime(2023, 1, 1, tzinfo=UTC), days=365)
    with pytest.raises(errors.GpuCertificateValidityError) as caught:
        verify_gpu_evidence(RAW, pems, root=root, nonce=HOPPER.nonce, now=NOW)
    assert caught.value.check == "chain[0].validity"


def test_devtools_mode_is_refused_by_default() -> None:
    verified = verify(cc_mode=GpuCcMode.DEVTOOLS)
    relaxed = GpuPolicy(require_ocsp=False, require_rim_match=False)
    with pytest.raises(errors.GpuPolicyError) as caught:
        validate_gpu(verified, relaxed)
    assert (caught.value.check, caught.value.actual) == ("cc_mode", "devtools")
    outcome = validate_gpu(verified, relaxed.model_copy(update={"unsafe_allow_devtools": True}))
    assert "cc_mode" in outcome.unsafe_allowed


@pytest.mark.parametrize("mode", [GpuCcMode.OFF, None])
def test_cc_off_or_unreported_is_refused_even_with_devtools_allowed(mode: GpuCcMode | None) -> None:
    verified = verify(cc_mode=mode)
    policy = GpuPolicy(unsafe_allow_devtools=True, require_ocsp=False, require_rim_match=False)
    with pytest.raises(errors.GpuPolicyError) as caught:
        validate_gpu(verified, policy)
    assert caught.value.check == "cc_mode"


# --- collateral ----------------------------------------------------------------------------------


def statuses(status: OcspStatus = OcspStatus.GOOD, **changes) -> tuple[CertificateStatus, ...]:
    chain = VERIFIER.verify(RAW, HOPPER.chain, nonce=HOPPER.nonce, now=NOW).chain
    return tuple(
        dataclasses.replace(
            CertificateStatus(
                fingerprint, status, NOW - timedelta(hours=1), NOW + timedelta(days=1)
            ),
            **changes,
        )
        for fingerprint in chain.sha256[1:-1]
    )


def test_ocsp_good_for_every_ca_is_checked() -> None:
    verified = verify(collateral=GpuCollateral(ocsp=statuses()))
    assert verified.revocation.state is CheckState.CHECKED
    assert len(verified.revocation.statuses) == 3  # BROM, provisioner ICA, GH100 Identity


def test_ocsp_revoked() -> None:
    with pytest.raises(errors.GpuRevokedError) as caught:
        verify(collateral=GpuCollateral(ocsp=statuses(OcspStatus.REVOKED)))
    assert caught.value.check == "ocsp.chain[1]"


@pytest.mark.parametrize(
    ("given", "check"),
    [
        (lambda: statuses()[1:], "ocsp.chain[1]"),
        (lambda: statuses(OcspStatus.UNKNOWN), "ocsp.chain[1]"),
        (lambda: statuses(next_update=NOW - timedelta(minutes=1)), "ocsp.chain[1].validity"),
    ],
    ids=["missing", "unknown", "stale"],
)
def test_ocsp_unusable(given, check: str) -> None:
    with pytest.raises(errors.GpuCollateralError) as caught:
        verify(collateral=GpuCollateral(ocsp=given()))
    assert caught.value.check == check


def reference(changed_index: int | None = None) -> ReferenceMeasurements:
    values = []
    for index, value in REPORT.measurements.items():
        alternatives = (bytes(48), value) if index != changed_index else (bytes(48),)
        values.append(ReferenceMeasurement(index, alternatives))
    return ReferenceMeasurements(tuple(values), source="test RIM")


def test_reference_measurements_match() -> None:
    verified = verify(collateral=GpuCollateral(ocsp=statuses(), reference_measurements=reference()))
    assert verified.reference_measurements.state is CheckState.MATCHED
    outcome = validate_gpu(verified, GpuPolicy())  # the strict default accepts
    assert not outcome.unsafe_allowed
    passed = {c.name for c in outcome.checks if c.outcome is CheckOutcome.PASSED}
    assert {"cc_mode", "revocation", "reference_measurements"} <= passed


def test_reference_mismatch_is_refused_whatever_the_policy() -> None:
    collateral = GpuCollateral(ocsp=statuses(), reference_measurements=reference(changed_index=12))
    verified = verify(collateral=collateral)
    assert verified.reference_measurements.mismatched == (12,)
    for policy in (GpuPolicy(), GpuPolicy(require_rim_match=False)):
        with pytest.raises(errors.GpuPolicyError) as caught:
            validate_gpu(verified, policy)
        assert caught.value.check == "reference_measurements"
        assert "12" in caught.value.actual


def test_reference_measurements_list_each_index_once() -> None:
    with pytest.raises(errors.GpuCollateralError):
        ReferenceMeasurements(
            (ReferenceMeasurement(1, (bytes(48),)), ReferenceMeasurement(1, (bytes(48),))), "x"
        )


def test_chain_with_the_root_twice_is_refused() -> None:
    root_pem = (HOPPER.chain.rsplit(b"-----BEGIN CERTIFICATE-----", 1)[1]).strip()
    doubled = HOPPER.chain.rstrip() + b"\n-----BEGIN CERTIFICATE-----" + root_pem + b"\n"
    with pytest.raises(errors.GpuCertificateError) as caught:
        verify(chain=doubled)
    assert caught.value.check == "chain.duplicate"
