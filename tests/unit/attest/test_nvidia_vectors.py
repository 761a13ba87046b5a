"""The real NVIDIA Hopper vectors: both reports verify with their own chains at an injected time,
trustee's claims agree with ours field by field, each chain case gets its verdict, and the
signed span is the one the GPU signed."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nvidia_vectors import (
    COCO,
    HOPPER,
    MANIFEST,
    NOW,
    NVIDIA,
    PAIRS,
    ReportPair,
    claims,
    nvidia_root,
)

from attest.errors import GpuCertificateError, GpuEvidenceFormatError
from attest.nvidia.chain import (
    NVIDIA_DEVICE_IDENTITY_CA_SHA256,
    GpuChainChecker,
    leaf_fwid,
    nvidia_device_identity_ca,
)
from attest.nvidia.collateral import CheckState, GpuCcMode
from attest.nvidia.opaque import FeatureFlag, NvdecStatus
from attest.nvidia.report import REQUEST_SIZE, SIGNATURE_SIZE, parse_gpu_report, report_from_hex
from attest.nvidia.verify import GpuVerifier, verify_gpu_evidence
from attest.roots import TrustRoot

VECTORS_ROOT = NVIDIA.parent


def test_files_are_the_ones_the_manifest_lists() -> None:
    listed = {entry["file"] for entry in MANIFEST["nvidia_files"]}
    present = {f"nvidia/{path.name}" for path in NVIDIA.iterdir()} - {"nvidia/PROVENANCE.md"}
    assert listed == present
    for entry in MANIFEST["nvidia_files"]:
        data = (VECTORS_ROOT / entry["file"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"])


def test_packaged_root_is_the_vectors_root() -> None:
    vectors_root = TrustRoot.from_file(NVIDIA / "nvidia_device_root.pem")
    assert vectors_root.der == nvidia_device_identity_ca().der
    assert vectors_root.sha256 == NVIDIA_DEVICE_IDENTITY_CA_SHA256
    assert vectors_root.sha256 == MANIFEST["nvidia_root_ca"]["sha256_der"]


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_real_report_verifies_with_its_chain(pair: ReportPair) -> None:
    verified = verify_gpu_evidence(
        pair.raw, pair.chain, root=nvidia_root(), nonce=pair.nonce, now=NOW, cc_mode=GpuCcMode.ON
    )
    row = next(r for r in MANIFEST["nvidia_reports"] if r["report"] == f"nvidia/{pair.report_file}")
    assert verified.nonce == pair.nonce
    assert verified.driver_version == row["driver_version"]
    assert verified.vbios_version == row["vbios_version"]
    assert verified.report.opaque.fwid.hex() == row["fwid"]
    assert verified.leaf_sha256 == row["leaf_sha256"]
    assert len(verified.measurements) == row["measurement_blocks"] == 64
    assert all(len(value) == 48 for value in verified.measurements.values())
    assert verified.root_sha256 == NVIDIA_DEVICE_IDENTITY_CA_SHA256
    assert not verified.simulated
    assert verified.cc_mode is GpuCcMode.ON
    # No collateral came with the vectors: both collateral checks say so.
    assert verified.revocation.state is CheckState.NOT_CHECKED
    assert verified.reference_measurements.state is CheckState.NOT_CHECKED
    assert verified.to_dict()["revocation"] == "not_checked"


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_real_report_round_trips(pair: ReportPair) -> None:
    report = parse_gpu_report(pair.raw)
    assert report.to_bytes() == pair.raw


def test_coco_report_details() -> None:
    report = parse_gpu_report(COCO.raw)
    assert report.padding == b"\x00"
    assert report.opaque.opaque_data_version == 1
    assert report.opaque.feature_flag is FeatureFlag.SPT
    hopper = parse_gpu_report(HOPPER.raw)
    assert hopper.padding == b""
    assert (hopper.opaque.opaque_data_version, hopper.opaque.feature_flag) == (None, None)


# --- trustee's claims, compared one by one -------------------------------------------------------


def test_claims_agree_with_the_reference_verifier() -> None:
    expected = claims()
    verified = verify_gpu_evidence(
        HOPPER.raw, HOPPER.chain, root=nvidia_root(), nonce=HOPPER.nonce, now=NOW
    )
    opaque = verified.report.opaque
    assert expected["measurements"] == {str(i): v.hex() for i, v in verified.measurements.items()}
    assert opaque.measurement_counts is not None
    ours = {
        "board_id": opaque.board_id.hex() if opaque.board_id else None,
        "chip_sku": opaque.chip_sku,
        "chip_sku_mod": opaque.chip_sku_mod,
        "cpr_info": opaque.cpr_info.hex() if opaque.cpr_info else None,
        "driver_version": verified.driver_version,
        "fwid": opaque.fwid.hex(),
        "gpu_info": opaque.gpu_info.hex() if opaque.gpu_info else None,
        "measurement_count": {
            str(index): count for index, count in enumerate(opaque.measurement_counts, start=1)
        },
        # trustee (at this commit) shows these two as their byte read as text: 0x55 is "U".
        "nvdec0_status": (
            chr(opaque.nvdec0_status.value) if opaque.nvdec0_status is not None else None
        ),
        "project": opaque.project,
        "project_sku": opaque.project_sku,
        "project_sku_mod": opaque.project_sku_mod.hex() if opaque.project_sku_mod else None,
        "protected_pcie_status": (
            opaque.protected_pcie_status.decode() if opaque.protected_pcie_status else None
        ),
        "vbios_version": verified.vbios_version,
    }
    assert set(expected["config"]) == set(ours), "a claim we do not extract, or one trustee lacks"
    for name, value in expected["config"].items():
        assert ours[name] == value, name
    assert opaque.nvdec0_status is NvdecStatus.DISABLED


# --- the signed span -----------------------------------------------------------------------------


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_signed_span_is_request_and_response_without_signature(pair: ReportPair) -> None:
    raw = pair.raw
    report = parse_gpu_report(raw)
    key = x509.load_pem_x509_certificates(pair.chain)[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    end = len(report.signed_bytes)
    assert report.signed_bytes == raw[:end]
    assert report.signature == raw[end : end + SIGNATURE_SIZE]
    assert _verifies(key, report.signature, raw[:end])
    # Not the response alone, nor a span shifted by a byte.
    assert not _verifies(key, report.signature, raw[REQUEST_SIZE:end])
    shifted = raw[end + 1 : end + 1 + SIGNATURE_SIZE]
    assert len(shifted) < SIGNATURE_SIZE or not _verifies(key, shifted, raw[: end + 1])


def test_reports_do_not_verify_with_the_other_gpus_leaf() -> None:
    for pair, other in ((HOPPER, COCO), (COCO, HOPPER)):
        report = parse_gpu_report(pair.raw)
        key = x509.load_pem_x509_certificates(other.chain)[0].public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert not _verifies(key, report.signature, report.signed_bytes)


# --- chain cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", MANIFEST["nvidia_chain_cases"], ids=lambda c: c["file"].removeprefix("nvidia/")
)
def test_chain_case_verdict(case: dict) -> None:
    checker = GpuChainChecker(nvidia_root())
    pems = (VECTORS_ROOT / case["file"]).read_bytes()
    assert len(x509.load_pem_x509_certificates(pems)) == case["certificates"]
    if case["error"] is None:
        chain = checker.verified_chain(pems)
        assert chain.sha256[-1] == NVIDIA_DEVICE_IDENTITY_CA_SHA256
        return
    with pytest.raises(GpuCertificateError) as caught:
        checker.verified_chain(pems)
    assert type(caught.value).__name__ == case["error"]
    assert caught.value.check == case["check"]


def test_signing_cert_is_case1_leaf_and_carries_the_report_fwid() -> None:
    signing = x509.load_pem_x509_certificate((NVIDIA / "hopper_signing_cert.pem").read_bytes())
    case1_leaf = x509.load_pem_x509_certificates(HOPPER.chain)[0]
    assert signing == case1_leaf
    assert leaf_fwid(signing) == parse_gpu_report(HOPPER.raw).opaque.fwid


def test_case1_chain_verifies_the_report_and_is_cached() -> None:
    verifier = GpuVerifier(nvidia_root())
    first = verifier.verify(HOPPER.raw, HOPPER.chain, nonce=HOPPER.nonce, now=NOW)
    second = verifier.verify(HOPPER.raw, HOPPER.chain.decode(), nonce=HOPPER.nonce, now=NOW)
    assert first.chain is second.chain  # the cached verdict, keyed by the chain's bytes


def test_hex_text_is_required_for_the_text_files() -> None:
    assert report_from_hex(HOPPER.raw.hex().upper() + "\n") == HOPPER.raw
    with pytest.raises(GpuEvidenceFormatError) as caught:
        report_from_hex("0x" + HOPPER.raw.hex())
    assert caught.value.check == "report.hex"
