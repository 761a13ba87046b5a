"""The simulated GPU: its evidence verifies only against the simulated root given explicitly, and
then says simulated; with its collateral it passes the default policy; changes are refused."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import errors
from attest.nvidia.chain import MAX_CHAIN_LENGTH, leaf_fwid
from attest.nvidia.collateral import CheckState, GpuCcMode
from attest.nvidia.policy import GpuPolicy, validate_gpu
from attest.nvidia.report import REQUEST_NONCE, parse_gpu_report
from attest.nvidia.simulated import (
    CHAIN_NAMES,
    MANIFEST,
    SIMULATED_FWID,
    SimulatedGpu,
    SimulatedGpuAuthority,
)
from attest.nvidia.verify import GpuVerifier, verify_gpu_evidence
from attest.policy import CheckOutcome

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def gpu() -> SimulatedGpu:
    return SimulatedGpu(SimulatedGpuAuthority.generate(now=NOW))


@pytest.fixture(scope="module")
def evidence(gpu: SimulatedGpu) -> tuple[bytes, bytes]:
    return gpu.evidence(NONCE)


def verify(gpu: SimulatedGpu, report: bytes, chain: bytes, nonce: bytes = NONCE):
    return verify_gpu_evidence(
        report,
        chain,
        root=gpu.authority.root,
        nonce=nonce,
        now=NOW,
        collateral=gpu.collateral(NOW),
        cc_mode=GpuCcMode.ON,
    )


def test_evidence_verifies_as_simulated_and_passes_the_default_policy(gpu, evidence) -> None:
    report, chain = evidence
    verified = verify(gpu, report, chain)
    assert verified.simulated and verified.to_dict()["simulated"]
    assert verified.root_sha256 == gpu.authority.root.sha256
    assert verified.nonce == NONCE
    assert verified.measurements == gpu.measurements
    assert (verified.driver_version, verified.vbios_version) == ("550.90.07", "96.00.9f.00.01")
    assert verified.revocation.state is CheckState.CHECKED
    assert verified.reference_measurements.state is CheckState.MATCHED
    outcome = validate_gpu(verified, GpuPolicy())
    assert all(c.outcome in (CheckOutcome.PASSED, CheckOutcome.NOT_PINNED) for c in outcome.checks)


def test_chain_is_shaped_like_nvidias(evidence) -> None:
    certificates = x509.load_pem_x509_certificates(evidence[1])
    assert len(certificates) == len(CHAIN_NAMES) <= MAX_CHAIN_LENGTH
    assert all("SIMULATED" in c.subject.rfc4514_string() for c in certificates)
    assert leaf_fwid(certificates[0]) == SIMULATED_FWID


def test_report_round_trips_through_the_parser(evidence) -> None:
    report = evidence[0]
    assert parse_gpu_report(report).to_bytes() == report


def test_refused_under_nvidias_root(evidence) -> None:
    report, chain = evidence
    with pytest.raises(errors.GpuCertificateError) as caught:
        GpuVerifier().verify(report, chain, nonce=NONCE, now=NOW, cc_mode=GpuCcMode.ON)
    assert caught.value.check == "chain.root"


def test_wrong_nonce_is_refused(gpu, evidence) -> None:
    with pytest.raises(errors.GpuNonceError) as caught:
        verify(gpu, *evidence, nonce=bytes(32))
    assert caught.value.check == "request.nonce"


def test_another_authoritys_root_is_refused(evidence) -> None:
    other = SimulatedGpuAuthority.generate(now=NOW)
    with pytest.raises(errors.GpuCertificateError) as caught:
        verify(SimulatedGpu(other), *evidence)
    assert caught.value.check == "chain.root"


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_byte_flips_are_refused(gpu, evidence, mask: int) -> None:
    report, chain = evidence
    verifier = GpuVerifier(gpu.authority.root)  # keeps the chain's verdict between flips
    collateral = gpu.collateral(NOW)
    for offset in range(len(report)):
        changed = bytearray(report)
        changed[offset] ^= mask
        with pytest.raises(errors.AttestError):
            verifier.verify(
                bytes(changed),
                chain,
                nonce=NONCE,
                now=NOW,
                collateral=collateral,
                cc_mode=GpuCcMode.ON,
            )


def test_nonce_flip_is_a_signature_error(gpu, evidence) -> None:
    report, chain = evidence
    changed = bytearray(report)
    changed[REQUEST_NONCE.offset] ^= 0x01
    with pytest.raises(errors.GpuSignatureError):
        verify(gpu, bytes(changed), chain, nonce=bytes(changed[REQUEST_NONCE.offset : 36]))


@settings(max_examples=25, deadline=None)
@given(nonce=st.binary(min_size=32, max_size=32))
def test_any_nonce_verifies(gpu, nonce: bytes) -> None:
    report, chain = gpu.evidence(nonce)
    assert verify(gpu, report, chain, nonce=nonce).nonce == nonce
    other = bytes(b ^ 0xFF for b in nonce)
    with pytest.raises(errors.GpuNonceError):
        verify(gpu, report, chain, nonce=other)


def test_nonce_must_be_32_bytes(gpu) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        gpu.evidence(bytes(16))


def test_directory_round_trip(tmp_path) -> None:
    directory = tmp_path / "gpu"
    created = SimulatedGpuAuthority.create(directory, now=NOW)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "leaf.key.pem").stat().st_mode) == 0o600
    loaded = SimulatedGpuAuthority.load_or_create(directory, now=NOW + timedelta(days=1))
    assert loaded.root == created.root and loaded.chain_pem == created.chain_pem
    report, chain = SimulatedGpu(loaded).evidence(NONCE)
    assert verify(SimulatedGpu(created), report, chain).simulated
    with pytest.raises(errors.AuthorityStoreError):
        SimulatedGpuAuthority.create(directory, now=NOW)


def test_directory_refused_when_unsafe_or_incomplete(tmp_path) -> None:
    directory = tmp_path / "gpu"
    SimulatedGpuAuthority.create(directory, now=NOW)
    (directory / "brom.key.pem").chmod(0o644)
    with pytest.raises(errors.AuthorityStoreError) as caught:
        SimulatedGpuAuthority.load(directory)
    assert caught.value.check == "gpu key file permissions"
    (directory / "brom.key.pem").chmod(0o600)
    (directory / MANIFEST).unlink()
    with pytest.raises(errors.AuthorityStoreError) as caught:
        SimulatedGpuAuthority.load(directory)
    assert caught.value.check == "gpu authority manifest"
