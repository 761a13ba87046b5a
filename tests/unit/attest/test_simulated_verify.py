"""Simulated evidence through `attest.verify`: it verifies only against the simulated root that
the caller passes, every result says `simulated`, and no protected byte can change unnoticed."""

from __future__ import annotations

import datetime as dt

import pytest
from support.simulated_evidence import (
    ATTESTATION_KEY,
    MR_TD_FIELD,
    NOW,
    PROTECTED_REGIONS,
    QE_REPORT,
    QE_REPORT_SIGNATURE,
    QUOTE_SIGNATURE,
    REPORT_DATA,
    REPORT_DATA_FIELD,
)

from attest.collateral_documents import TcbStatus
from attest.errors import (
    AttestError,
    CollateralExpiredError,
    CollateralSignatureError,
    FormatError,
    KeyBindingError,
    RevokedError,
    SignatureError,
    TcbRevokedError,
    VerificationError,
)
from attest.roots import TrustRoot
from attest.rtmr import RtmrEvent, RtmrEventLog, verify_replay
from attest.simulated import (
    SimulatedAuthority,
    SimulatedQuoteProvider,
    SimulatedTd,
    simulated_collateral,
)
from attest.verify import DcapVerifier


@pytest.fixture(scope="module")
def collateral(authority):
    return simulated_collateral(authority, now=NOW).to_collateral()


@pytest.fixture(scope="module")
def verifier(authority) -> DcapVerifier:
    return DcapVerifier(TrustRoot(authority.root_der))


def test_verifies_with_the_simulated_root_and_says_so(authority, quote, collateral, verifier):
    result = verifier.verify(quote, collateral, now=NOW)

    assert result.tcb_status is TcbStatus.UP_TO_DATE
    assert result.simulated is True
    assert result.root_sha256 == authority.root_sha256
    assert result.quote.body.report_data == REPORT_DATA
    assert result.fmspc == authority.platform.fmspc.hex()
    assert result.to_dict()["simulated"] is True


def test_fails_with_intels_root_at_the_chain_check(quote, collateral):
    with pytest.raises(VerificationError) as caught:
        DcapVerifier().verify(quote, collateral, now=NOW)
    assert isinstance(caught.value, CollateralSignatureError)
    assert caught.value.check == "root_ca_crl.signature"


def test_fails_with_the_root_of_another_simulated_authority(quote, collateral, tmp_path):
    other = SimulatedAuthority.create(tmp_path / "other", now=NOW)
    with pytest.raises(CollateralSignatureError):
        DcapVerifier(TrustRoot(other.root_der)).verify(quote, collateral, now=NOW)


@pytest.mark.parametrize(
    ("region", "error", "check"),
    [
        (REPORT_DATA_FIELD, SignatureError, "quote_signature"),  # REPORTDATA
        (MR_TD_FIELD, SignatureError, "quote_signature"),  # MRTD
        (QUOTE_SIGNATURE, SignatureError, "quote_signature"),
        (ATTESTATION_KEY, KeyBindingError, "qe_report.report_data"),
        (QE_REPORT, SignatureError, "qe_report_signature"),
        (QE_REPORT_SIGNATURE, SignatureError, "qe_report_signature"),
    ],
    ids=["report-data", "mr-td", "signature", "attestation-key", "qe-report", "qe-signature"],
)
def test_a_flipped_byte_fails_at_the_check_that_protects_it(
    quote, collateral, verifier, region, error, check
):
    tampered = bytearray(quote)
    tampered[(region.start + region.stop) // 2] ^= 0x01
    with pytest.raises(error) as caught:
        verifier.verify(bytes(tampered), collateral, now=NOW)
    assert caught.value.check == check


def test_no_byte_of_the_protected_regions_can_change(quote, collateral, verifier):
    protected = [offset for region in PROTECTED_REGIONS for offset in region]
    accepted = []
    for offset in protected:
        tampered = bytearray(quote)
        tampered[offset] ^= 0x80
        try:
            verifier.verify(bytes(tampered), collateral, now=NOW)
        except (FormatError, VerificationError):
            continue
        accepted.append(offset)
    assert accepted == []


def test_rtmr_extension_verifies_and_the_log_replays_to_the_verified_value(
    authority, collateral, verifier
):
    provider = SimulatedQuoteProvider(authority)
    log = RtmrEventLog()
    log.measure(provider, RtmrEvent.from_data(3, "model-load", bytes(32), "model a"))
    log.measure(provider, RtmrEvent.from_data(3, "model-load", bytes([1]) * 32, "model b"))

    verified = verifier.verify(provider.get_quote(REPORT_DATA), collateral, now=NOW)

    verify_replay(log.events, verified.quote.body.rtmr, initial=SimulatedTd().initial_rtmrs)
    with pytest.raises(VerificationError, match="RTMR3 does not match"):
        verify_replay(log.events[:1], verified.quote.body.rtmr, initial=SimulatedTd().initial_rtmrs)


def test_reloaded_authority_keeps_verifying_against_the_same_root(authority, collateral, verifier):
    reloaded = SimulatedAuthority.load(authority.directory)
    quote = SimulatedQuoteProvider(reloaded).get_quote(REPORT_DATA)
    assert verifier.verify(quote, collateral, now=NOW).simulated


@pytest.mark.parametrize(
    "status", [s for s in TcbStatus if s is not TcbStatus.REVOKED], ids=lambda s: s.value
)
def test_collateral_grades_as_asked(authority, quote, verifier, status):
    collateral = simulated_collateral(
        authority, now=NOW, tcb_status=status, advisory_ids=["SIMULATED-SA-00001"]
    ).to_collateral()
    result = verifier.verify(quote, collateral, now=NOW)
    assert result.tcb_status is status
    assert result.advisory_ids == ("SIMULATED-SA-00001",)


def test_revoked_tcb_level_and_revoked_pck_fail(authority, quote, verifier):
    revoked_level = simulated_collateral(authority, now=NOW, tcb_status="Revoked").to_collateral()
    with pytest.raises(TcbRevokedError):
        verifier.verify(quote, revoked_level, now=NOW)
    revoked_pck = simulated_collateral(authority, now=NOW, revoke_pck=True).to_collateral()
    with pytest.raises(RevokedError):
        verifier.verify(quote, revoked_pck, now=NOW)


def test_collateral_is_valid_only_in_its_window(quote, collateral, verifier):
    identity = collateral.identity
    with pytest.raises(CollateralExpiredError):
        verifier.verify(
            quote, collateral, now=identity.tcb_info_next_update + dt.timedelta(seconds=1)
        )
    with pytest.raises(CollateralExpiredError):
        verifier.verify(
            quote, collateral, now=identity.tcb_info_issue_date - dt.timedelta(seconds=1)
        )


def test_errors_are_attest_errors_with_a_stage(quote, collateral):
    with pytest.raises(AttestError) as caught:
        DcapVerifier().verify(quote, collateral, now=NOW)
    assert caught.value.to_dict()["stage"] == "verify"
