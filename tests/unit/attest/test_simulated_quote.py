"""Simulated quotes and collateral: structure, round trip, and verification by an independent
verifier (dcap-qvl, tests only) with the simulated root, never with Intel's."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.simulated_evidence import (
    ATTESTATION_KEY,
    NOW,
    QE_REPORT,
    QE_REPORT_SIGNATURE,
    QUOTE_SIGNATURE,
    REPORT_DATA,
    SIGNED_REGION,
)

from attest.collateral_documents import TcbStatus
from attest.collateral_load import collateral_from_bundle_json, collateral_from_pcs_responses
from attest.providers import QuoteProvider
from attest.quote import parse_quote
from attest.rtmr import RtmrEvent, RtmrEventLog, extend_value, verify_replay
from attest.simulated import (
    SimulatedAuthority,
    SimulatedQuoteProvider,
    SimulatedTd,
    simulated_collateral,
)


@pytest.fixture(scope="module")
def bundle(authority) -> str:
    return simulated_collateral(authority, now=NOW).to_bundle_json()


def dcap_verify(quote: bytes, bundle: str, root_der: bytes | None, now: dt.datetime):
    collateral = dcap_qvl.QuoteCollateralV3.from_json(bundle)
    if root_der is None:
        return dcap_qvl.verify(quote, collateral, int(now.timestamp()))
    return dcap_qvl.verify_with_root_ca(quote, collateral, root_der, int(now.timestamp()))


def test_quote_parses_round_trips_and_carries_what_was_asked(authority, quote):
    parsed = parse_quote(quote)
    td = SimulatedTd()

    assert parsed.to_bytes() == quote
    assert parsed.version == 4 and parsed.header.tee_type == 0x81
    assert parsed.body.report_data == REPORT_DATA
    assert parsed.body.mr_td == td.mr_td
    assert parsed.body.rtmr == td.initial_rtmrs
    assert parsed.body.tee_tcb_svn == authority.platform.tee_tcb_svn
    assert parsed.body.sept_ve_disable and not parsed.body.debug
    assert parsed.padding == b""
    qe = parsed.certification_data
    assert qe.qe_report.report_data == (
        hashlib.sha256(parsed.attestation_key + qe.qe_auth_data).digest() + bytes(32)
    )
    chain = [c.public_bytes(serialization.Encoding.DER) for c in authority.pck_chain]
    assert list(parsed.pck_cert_chain) == chain


def test_provider_interface(authority):
    provider = SimulatedQuoteProvider(authority)
    assert isinstance(provider, QuoteProvider)
    assert provider.tee == "simulated"


def test_independent_verifier_accepts_it_with_the_simulated_root(authority, quote, bundle):
    report = dcap_verify(quote, bundle, authority.root_der, NOW)
    assert report.status == "UpToDate"
    assert report.advisory_ids == []


def test_independent_verifier_refuses_it_with_intels_root(quote, bundle):
    with pytest.raises(ValueError, match="InvalidCrlSignatureForPublicKey"):
        dcap_verify(quote, bundle, None, NOW)


def test_collateral_of_another_authority_does_not_verify(quote, tmp_path):
    other = SimulatedAuthority.create(tmp_path / "other", now=NOW)
    other_bundle = simulated_collateral(other, now=NOW).to_bundle_json()
    with pytest.raises(ValueError):
        dcap_verify(quote, other_bundle, other.root_der, NOW)


@pytest.mark.parametrize(
    ("region", "error"),
    [
        (SIGNED_REGION, "ISV enclave report signature is invalid"),
        (QUOTE_SIGNATURE, "ISV enclave report signature is invalid"),
        (ATTESTATION_KEY, "QE report hash mismatch"),
        (QE_REPORT, "Signature is invalid for qe_report"),
        (QE_REPORT_SIGNATURE, "Signature is invalid for qe_report"),
    ],
    ids=["body", "signature", "attestation-key", "qe-report", "qe-report-signature"],
)
def test_flipping_a_protected_byte_breaks_verification(authority, quote, bundle, region, error):
    # One byte in the middle of each region whose change the verifier must notice: REPORTDATA
    # for the body (568 + 10), and the middle of the others.
    offset = 578 if region is SIGNED_REGION else (region.start + region.stop) // 2
    tampered = bytearray(quote)
    tampered[offset] ^= 0x01
    with pytest.raises(ValueError, match=error):
        dcap_verify(bytes(tampered), bundle, authority.root_der, NOW)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offset=st.one_of(
        st.sampled_from([*SIGNED_REGION]),
        st.sampled_from([*QUOTE_SIGNATURE, *ATTESTATION_KEY, *QE_REPORT, *QE_REPORT_SIGNATURE]),
    ),
    bit=st.integers(0, 7),
)
def test_any_bit_flip_in_a_protected_region_is_refused(authority, quote, bundle, offset, bit):
    tampered = bytearray(quote)
    tampered[offset] ^= 1 << bit
    with pytest.raises(ValueError):
        dcap_verify(bytes(tampered), bundle, authority.root_der, NOW)


def test_collateral_windows_surround_now(authority, quote, bundle):
    collateral = collateral_from_bundle_json(bundle)
    identity = collateral.identity
    assert identity.fmspc == authority.platform.fmspc.hex()
    for start, end in [
        (identity.tcb_info_issue_date, identity.tcb_info_next_update),
        (identity.qe_identity_issue_date, identity.qe_identity_next_update),
        (identity.pck_crl_this_update, identity.pck_crl_next_update),
        (identity.root_ca_crl_this_update, identity.root_ca_crl_next_update),
    ]:
        assert start < NOW < end
    with pytest.raises(ValueError, match=r"(?i)expired"):
        dcap_verify(
            quote,
            bundle,
            authority.root_der,
            identity.tcb_info_next_update + dt.timedelta(seconds=1),
        )


def test_collateral_signs_the_exact_json_text_it_stores(authority):
    pieces = simulated_collateral(authority, now=NOW)
    bundle = json.loads(pieces.to_bundle_json())
    assert bundle["tcb_info"] == pieces.tcb_info
    assert json.loads(pieces.tcb_info_response())["tcbInfo"] == json.loads(pieces.tcb_info)
    # The PCS-response form assembles into the same collateral as the bundle form.
    from_pcs = collateral_from_pcs_responses(
        tcb_info_body=pieces.tcb_info_response(),
        tcb_info_issuer_chain=pieces.tcb_info_issuer_chain,
        qe_identity_body=pieces.qe_identity_response(),
        qe_identity_issuer_chain=pieces.qe_identity_issuer_chain,
        pck_crl=pieces.pck_crl,
        pck_crl_issuer_chain=pieces.pck_crl_issuer_chain,
        root_ca_crl=pieces.root_ca_crl,
    )
    assert (
        from_pcs.to_bundle_json()
        == collateral_from_bundle_json(pieces.to_bundle_json()).to_bundle_json()
        == pieces.to_collateral().to_bundle_json()
    )


@pytest.mark.parametrize("status", [s.value for s in TcbStatus if s is not TcbStatus.REVOKED])
def test_collateral_can_grade_the_platform_as_asked(authority, quote, status):
    bundle = simulated_collateral(
        authority, now=NOW, tcb_status=status, advisory_ids=["SIMULATED-SA-00001"]
    ).to_bundle_json()
    report = dcap_verify(quote, bundle, authority.root_der, NOW)
    assert report.status == status
    assert report.advisory_ids == ["SIMULATED-SA-00001"]


def test_revoked_pck_is_refused(authority, quote):
    bundle = simulated_collateral(authority, now=NOW, revoke_pck=True).to_bundle_json()
    with pytest.raises(ValueError, match=r"(?i)revoked"):
        dcap_verify(quote, bundle, authority.root_der, NOW)


def test_debug_td_is_produced_on_request_and_refused_by_the_verifier(authority, bundle):
    debug_td = SimulatedTd(td_attributes=(1 << 28) | 1)
    quote = SimulatedQuoteProvider(authority, debug_td).get_quote(REPORT_DATA)
    assert parse_quote(quote).body.debug
    with pytest.raises(ValueError, match="Debug mode is enabled"):
        dcap_verify(quote, bundle, authority.root_der, NOW)


def test_rtmr_extension_shows_in_the_next_quote_and_the_log_replays_to_it(authority, bundle):
    provider = SimulatedQuoteProvider(authority)
    log = RtmrEventLog()
    before = parse_quote(provider.get_quote(REPORT_DATA)).body.rtmr

    event = RtmrEvent.from_data(3, "model-load", bytes.fromhex("ab" * 32), "model llama")
    log.measure(provider, event)
    after = parse_quote(provider.get_quote(REPORT_DATA)).body.rtmr

    assert after[:3] == before[:3]
    assert after[3] == extend_value(before[3], event.digest) != before[3]
    verify_replay(log.events, after, initial=SimulatedTd().initial_rtmrs)
    assert provider.rtmrs() == after
    assert (
        dcap_verify(provider.get_quote(REPORT_DATA), bundle, authority.root_der, NOW).status
        == "UpToDate"
    )


def test_a_reloaded_authority_signs_quotes_that_verify_against_the_first_root(authority, bundle):
    reloaded = SimulatedAuthority.load(Path(authority.directory))
    quote = SimulatedQuoteProvider(reloaded).get_quote(REPORT_DATA)
    assert dcap_verify(quote, bundle, authority.root_der, NOW).status == "UpToDate"
