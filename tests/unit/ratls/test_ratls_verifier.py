"""RatlsVerifier on certificates (no TLS): what the AttestationResult says, check by check."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from support.pinned import simulated_td_pins, simulated_td_policy
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures
from support.ratls_unit_fixtures import START

from attest.collateral_load import collateral_from_bundle_json
from attest.errors import CollateralError, PolicyError, VerificationError
from attest.quote import PckCertChain, parse_quote
from attest.roots import TrustRoot
from attest.rtmr import RtmrEvent, RtmrEventLog
from attest.simulated import SimulatedQuoteProvider, SimulatedTd, simulated_collateral
from attest.verify import DcapVerifier
from checks.errors import show
from ratls.collateral import PcsCollateral, StaticCollateral
from ratls.errors import (
    AttestationRefused,
    CertificateError,
    HostnameMismatchError,
    ModelDigestError,
    ModelMeasurementError,
)
from ratls.evidence import make_nonce_evidence
from ratls.issuer import IdentityIssuer
from ratls.policy import AppraisalPolicy
from ratls.profile import MODEL_EVENT_TYPE, MODEL_RTMR
from ratls.result import AttestationResult
from ratls.served_models import ServedModel
from ratls.verifier import RatlsVerifier

DIGEST = hashlib.sha256(b"model").digest()
NONCE = bytes(range(40))


@pytest.fixture
def verifier_for(sim_authority, clock):
    def make(policy: AppraisalPolicy | None = None, *, tcb_status: str = "UpToDate",
             validity: timedelta = timedelta(days=30), root: bool = True) -> RatlsVerifier:
        bundle = simulated_collateral(sim_authority, now=START, tcb_status=tcb_status,
                                      validity=validity).to_bundle_json()
        return RatlsVerifier(
            dcap=DcapVerifier(TrustRoot(sim_authority.root_der) if root else None),
            policy=policy or simulated_td_policy(),
            collateral=StaticCollateral(collateral_from_bundle_json(bundle)),
            clock=clock,
        )

    return make


@pytest.fixture
def issuer(provider, names, clock) -> IdentityIssuer:
    return IdentityIssuer(provider, names, clock=clock)


def test_verified_result_reports_everything(verifier_for, issuer, sim_authority) -> None:
    identity = issuer.reissue(model_digest=DIGEST)
    result = verifier_for().attest(identity.certificate.der, hostname="appliance.test")
    td = SimulatedTd()
    assert result.verified and not result.errors
    assert result.tee == "simulated"
    assert result.tcb_status == "UpToDate" and result.advisory_ids == []
    assert result.trust_root_sha256 == sim_authority.root_sha256
    assert result.measurements.mr_td == td.mr_td.hex()
    assert result.measurements.rtmr == [r.hex() for r in td.initial_rtmrs]
    assert result.measurements.debug is False
    assert result.binding.mode == "certificate" and result.binding.held
    assert result.binding.expected_report_data == identity.certificate.report_data.hex()
    assert result.model_digest == DIGEST.hex()
    assert result.certificate.sha256_fingerprint == identity.fingerprint.hex()
    assert result.certificate.pem.startswith("-----BEGIN CERTIFICATE-----")
    assert result.collateral["fmspc"] == sim_authority.platform.fmspc.hex()
    next_update = START.replace(microsecond=0) - timedelta(hours=1) + timedelta(days=30)
    assert result.valid_until == min(identity.not_after, next_update)
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["key_binding"] == "passed" and outcomes["hostname"] == "passed"
    assert outcomes["mr_td"] == "passed" and outcomes["model_digest"] == "not_pinned"
    assert outcomes["rtmr3"] == "not_pinned" and outcomes["measurements_pinned"] == "passed"
    assert outcomes["report_data"] == "passed"  # attest's policy, pinned to the binding value
    assert AttestationResult.model_validate_json(result.model_dump_json()) == result


def test_pinned_values_pass_and_are_listed(verifier_for, issuer) -> None:
    identity = issuer.reissue(model_digest=DIGEST)
    td = SimulatedTd()
    policy = simulated_td_policy(
        rtmr0=["ee" * 48, td.initial_rtmrs[0].hex()],  # an upgrade overlaps two releases
        allowed_model_digests=[DIGEST.hex()],
    )
    result = verifier_for(policy).attest(identity.certificate.der, hostname="127.0.0.1")
    assert result.verified
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["mr_td"] == outcomes["rtmr0"] == outcomes["model_digest"] == "passed"


def test_policy_failure_lists_every_policy_check(verifier_for, issuer) -> None:
    policy = simulated_td_policy(rtmr3=["cd" * 48])
    verifier = verifier_for(policy)
    with pytest.raises(AttestationRefused) as err:
        verifier.verify(issuer.current().certificate.der, hostname="::1")
    assert isinstance(err.value.cause, PolicyError)
    result = err.value.result
    failed = [c for c in result.checks if c.outcome == "failed"]
    assert [c.name for c in failed] == ["rtmr3"]
    assert failed[0].expected == f"one of [{'cd' * 48}]" and failed[0].actual == "00" * 48
    assert {"td_attributes.debug", "tcb_status", "mr_td"} <= {c.name for c in result.checks}
    assert result.errors[0].stage == "validate"
    assert "FAILED rtmr3" in result.summary()


def test_unsafe_relaxation_passes_and_says_so(verifier_for, issuer) -> None:
    policy = simulated_td_policy(unsafe_allowed_tcb_statuses=["OutOfDate"])
    result = verifier_for(policy, tcb_status="OutOfDate").attest(
        issuer.current().certificate.der, hostname="appliance.test")
    assert result.verified and result.tcb_status == "OutOfDate"
    assert {c.name: c.outcome for c in result.checks}["tcb_status"] == "unsafe_allowed"
    assert "UNSAFE_ALLOWED tcb_status" in result.summary()


def test_out_of_date_tcb_is_refused_by_default(verifier_for, issuer) -> None:
    result = verifier_for(tcb_status="OutOfDate").attest(issuer.current().certificate.der,
                                                         hostname="appliance.test")
    assert not result.verified and result.errors[0].check == "tcb_status"


def test_simulated_evidence_needs_the_simulated_root(verifier_for, issuer) -> None:
    with pytest.raises(AttestationRefused) as err:
        verifier_for(root=False).verify(issuer.current().certificate.der, hostname=None)
    assert isinstance(err.value.cause, VerificationError)
    assert err.value.result.tee is None and err.value.result.measurements is None


def test_expired_collateral_is_refused(verifier_for, issuer, clock) -> None:
    verifier = verifier_for(validity=timedelta(hours=2))
    identity = issuer.current()
    clock.advance(timedelta(hours=1, minutes=1))
    with pytest.raises(AttestationRefused) as err:
        verifier.verify(identity.certificate.der, hostname=None)
    assert isinstance(err.value.cause, CollateralError)


@pytest.mark.parametrize("host", ["other.test", "127.0.0.2", "::2", "APPLIANCE.TEST.evil"])
def test_host_outside_the_sans_is_refused(verifier_for, issuer, host) -> None:
    with pytest.raises(AttestationRefused) as err:
        verifier_for().verify(issuer.current().certificate.der, hostname=host)
    assert isinstance(err.value.cause, HostnameMismatchError)


@pytest.mark.parametrize("host", ["appliance.test", "Appliance.TEST.", "127.0.0.1", "[::1]"])
def test_host_in_the_sans_passes(verifier_for, issuer, host) -> None:
    assert verifier_for().attest(issuer.current().certificate.der, hostname=host).verified


def test_skipping_the_host_check_leaves_it_out_of_the_checks(verifier_for, issuer) -> None:
    result = verifier_for().attest(issuer.current().certificate.der, hostname=None)
    assert result.verified and "hostname" not in {c.name for c in result.checks}


def test_certificate_time_is_the_verifiers_clock(verifier_for, issuer, clock) -> None:
    identity = issuer.current()
    result = verifier_for().attest(identity.certificate.der, hostname=None,
                                   now=identity.not_after + timedelta(seconds=1))
    assert not result.verified and result.errors[0].check == "not_after"
    assert result.errors[0].type == CertificateError.__name__


def test_nonce_mode_with_an_rtmr_event_log(verifier_for, sim_authority, names, clock) -> None:
    evidence, identity = evidence_measuring(sim_authority, names, clock, [DIGEST], DIGEST)
    result = verifier_for().attest(identity.certificate.der, hostname=None, evidence=evidence,
                                   nonce=NONCE)
    assert result.verified, result.errors
    assert result.binding.mode == "nonce" and result.binding.nonce == NONCE.hex()
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["rtmr3_event_log"] == outcomes["rtmr3_model_digest"] == "passed"

    forged_log = RtmrEventLog([model_event(b"another model")])
    forged = evidence.model_copy(update={"event_log": json.loads(forged_log.to_json())})
    refused = verifier_for().attest(identity.certificate.der, hostname=None, evidence=forged,
                                    nonce=NONCE)
    assert not refused.verified and refused.errors[0].check == "rtmr3 replay"


OTHER_DIGEST = hashlib.sha256(b"other model").digest()


@pytest.mark.parametrize(("measured", "actual"), [
    ([OTHER_DIGEST], OTHER_DIGEST.hex()),
    ([DIGEST, OTHER_DIGEST], OTHER_DIGEST.hex()),  # only the last model event counts
    ([], "no model event"),
    ([RtmrEvent.from_data(3, "another.type", DIGEST)], "no model event"),
    ([RtmrEvent.from_data(2, MODEL_EVENT_TYPE, DIGEST)], "no model event"),
], ids=["another_model", "another_model_last", "empty_log", "another_event_type", "rtmr2"])
def test_log_that_replays_but_measured_another_model_is_refused(
    verifier_for, sim_authority, names, clock, measured, actual
) -> None:
    # The simulated TD really measured `measured` (so RTMR3 replays); the certificate claims DIGEST.
    evidence, identity = evidence_measuring(sim_authority, names, clock, measured, DIGEST)
    with pytest.raises(AttestationRefused) as err:
        verifier_for().verify(identity.certificate.der, hostname=None, evidence=evidence,
                              nonce=NONCE)
    cause = err.value.cause
    assert isinstance(cause, ModelMeasurementError) and cause.check == "rtmr3_model_digest"
    assert (cause.expected, cause.actual) == (DIGEST.hex(), actual)
    outcomes = {c.name: c.outcome for c in err.value.result.checks}
    assert outcomes["rtmr3_event_log"] == "passed" and outcomes["rtmr3_model_digest"] == "failed"


def test_last_model_event_without_its_data_is_compared_by_digest(
    verifier_for, sim_authority, names, clock
) -> None:
    measured = [OTHER_DIGEST, DIGEST]
    evidence, identity = evidence_measuring(sim_authority, names, clock, measured, DIGEST)
    events = [RtmrEvent(e.index, e.digest, e.event_type) for e in evidence.rtmr_event_log().events]
    bare = evidence.model_copy(update={"event_log": json.loads(RtmrEventLog(events).to_json())})
    result = verifier_for().attest(identity.certificate.der, hostname=None, evidence=bare,
                                   nonce=NONCE)
    assert result.verified, result.errors
    check = next(c for c in result.checks if c.name == "rtmr3_model_digest")
    assert check.outcome == "passed" and "no data" in check.actual


def test_no_model_in_the_certificate_makes_the_model_event_not_applicable(
    verifier_for, sim_authority, names, clock
) -> None:
    # Loaded, then unloaded: the certificate has no digest, RTMR3 still holds the old model.
    evidence, identity = evidence_measuring(sim_authority, names, clock, [DIGEST], None)
    result = verifier_for().attest(identity.certificate.der, hostname=None, evidence=evidence,
                                   nonce=NONCE)
    assert result.verified, result.errors
    check = next(c for c in result.checks if c.name == "rtmr3_model_digest")
    assert (check.outcome, check.actual) == ("not_applicable", DIGEST.hex())
    assert "1 not applicable" in result.summary()


def model_event(digest: bytes) -> RtmrEvent:
    return RtmrEvent.from_data(MODEL_RTMR, MODEL_EVENT_TYPE, digest, description="model")


def evidence_measuring(sim_authority, names, clock, measured, cert_digest):
    """Nonce evidence of a simulated TD that measured `measured` (digests or events) into its
    RTMRs, presenting a certificate that claims `cert_digest` (one digest, or a tuple of served
    models)."""
    td_provider = SimulatedQuoteProvider(sim_authority)
    log = RtmrEventLog()
    for item in measured:
        log.measure(td_provider, item if isinstance(item, RtmrEvent) else model_event(item))
    issuer = IdentityIssuer(td_provider, names, clock=clock)
    identity = (issuer.reissue(models=cert_digest) if isinstance(cert_digest, tuple)
                else issuer.reissue(model_digest=cert_digest))
    evidence = make_nonce_evidence(identity, td_provider, NONCE, now=START, event_log=log)
    return evidence, identity


def test_nonce_mode_needs_both_arguments(verifier_for, issuer, provider) -> None:
    identity = issuer.current()
    evidence = make_nonce_evidence(identity, provider, NONCE, now=START)
    with pytest.raises(ValueError):
        verifier_for().attest(identity.certificate.der, hostname=None, evidence=evidence)


def test_a_policy_that_pins_nothing_refuses_every_server(verifier_for, issuer) -> None:
    result = verifier_for(AppraisalPolicy()).attest(
        issuer.current().certificate.der, hostname="appliance.test")
    assert not result.verified
    error = result.errors[0]
    assert error.check == "measurements_pinned" and error.stage == "validate"
    assert error.expected == "mr_td, rtmr0, rtmr1, rtmr2 pinned"
    assert error.actual == "not pinned: mr_td, rtmr0, rtmr1, rtmr2"


@pytest.mark.parametrize("unpinned", ["mr_td", "rtmr0", "rtmr1", "rtmr2"])
def test_leaving_any_identity_register_open_refuses(verifier_for, issuer, unpinned) -> None:
    document = {k: v for k, v in simulated_td_pins().items() if k != unpinned}
    result = verifier_for(AppraisalPolicy.from_document(document)).attest(
        issuer.current().certificate.der, hostname="appliance.test")
    assert not result.verified
    assert result.errors[0].check == "measurements_pinned"
    assert result.errors[0].actual == f"not pinned: {unpinned}"


def test_the_named_unsafe_policy_accepts_and_says_so(verifier_for, issuer) -> None:
    result = verifier_for(AppraisalPolicy.unsafe_unpinned()).attest(
        issuer.current().certificate.der, hostname="appliance.test")
    assert result.verified
    assert {c.name: c.outcome for c in result.checks}["measurements_pinned"] == "unsafe_allowed"
    assert "UNSAFE_ALLOWED measurements_pinned" in result.summary()


def test_a_certificate_longer_than_the_rotation_is_refused(verifier_for, provider, names,
                                                          clock) -> None:
    long_lived = IdentityIssuer(provider, names, clock=clock, validity=timedelta(days=10))
    result = verifier_for().attest(long_lived.current().certificate.der, hostname=None)
    assert not result.verified
    error = result.errors[0]
    assert (error.check, error.stage) == ("certificate_lifetime", "certificate")
    assert error.expected == "<= 1 day, 0:00:00" and error.actual == "10 days, 0:00:00"
    relaxed = simulated_td_policy(max_certificate_validity_hours=240,
                                  max_certificate_age_hours=240)
    assert verifier_for(relaxed).attest(long_lived.current().certificate.der,
                                        hostname=None).verified


def test_an_old_certificate_is_refused_by_age(verifier_for, provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock, validity=timedelta(days=10))
    certificate = issuer.current().certificate.der
    clock.advance(timedelta(hours=30))
    policy = simulated_td_policy(max_certificate_validity_hours=240)
    result = verifier_for(policy).attest(certificate, hostname=None)
    assert not result.verified and result.errors[0].check == "certificate_age"


class _NotACertificateLeaf:
    """A quote provider whose PCK chain starts with DER that is a SEQUENCE but no certificate."""

    def __init__(self, provider) -> None:
        self._provider = provider
        self.tee = provider.tee

    def get_quote(self, report_data: bytes) -> bytes:
        quote = parse_quote(self._provider.get_quote(report_data))
        data = quote.certification_data
        chain = PckCertChain((b"\x30\x03\x02\x01\x01", *data.pck_cert_chain.certificates[1:]))
        return replace(quote, certification_data=replace(data, pck_cert_chain=chain)).to_bytes()


def test_a_pck_leaf_that_is_not_a_certificate_is_a_typed_refusal(provider, names, clock) -> None:
    class NeverFetched:
        def collateral(self, fmspc, ca, *, now):
            raise AssertionError("collateral must not be fetched for an unreadable PCK leaf")

    issuer = IdentityIssuer(_NotACertificateLeaf(provider), names, clock=clock)
    verifier = RatlsVerifier(dcap=DcapVerifier(None), policy=simulated_td_policy(),
                             collateral=PcsCollateral(NeverFetched()), clock=clock)
    result = verifier.attest(issuer.current().certificate.der, hostname=None)
    assert not result.verified
    assert (result.errors[0].check, result.errors[0].stage) == ("pck_leaf", "verify")


# -- Several served models ------------------------------------------------------------------------

ALPHA = ServedModel("alpha", hashlib.sha256(b"alpha image").digest())
BETA = ServedModel("beta", hashlib.sha384(b"beta image").digest())
GAMMA = ServedModel("gamma", hashlib.sha512(b"gamma image").digest())
SERVED = (ALPHA, BETA, GAMMA)
OTHER = ServedModel("other", OTHER_DIGEST)


def test_the_result_lists_every_served_model(verifier_for, issuer) -> None:
    identity = issuer.reissue(models=[GAMMA, ALPHA, BETA])
    result = verifier_for().attest(identity.certificate.der, hostname="appliance.test")
    assert result.verified, result.errors
    assert [(m.name, m.digest) for m in result.models] == [(m.name, m.digest.hex())
                                                           for m in SERVED]
    assert result.model_digest is None  # several: read `models`
    check = next(c for c in result.checks if c.name == "model_digests")
    assert check.outcome == "not_pinned"
    assert check.actual == "[" + ", ".join(m.digest.hex() for m in SERVED) + "]"
    assert "model_digest" not in {c.name for c in result.checks}
    assert "models       3 served" in result.summary() and "    beta " in result.summary()
    assert AttestationResult.model_validate_json(result.model_dump_json()) == result


def test_one_named_model_keeps_the_one_model_fields_and_checks(verifier_for, issuer) -> None:
    identity = issuer.reissue(models=[ALPHA])
    policy = simulated_td_policy(allowed_model_digests=[ALPHA.digest.hex()])
    result = verifier_for(policy).attest(identity.certificate.der, hostname=None)
    assert result.verified, result.errors
    assert result.model_digest == ALPHA.digest.hex()
    assert [(m.name, m.digest) for m in result.models] == [("alpha", ALPHA.digest.hex())]
    assert {c.name: c.outcome for c in result.checks}["model_digest"] == "passed"
    assert f"model digest {ALPHA.digest.hex()} (alpha)" in result.summary()


def hexes(*models: ServedModel) -> list[str]:
    return [m.digest.hex() for m in models]


@pytest.mark.parametrize(
    ("policy", "outcomes"),
    [
        ({"allowed_model_digests": hexes(*SERVED, OTHER)},
         {"model_digests": "passed"}),
        ({"allowed_model_digests": hexes(*SERVED), "required_model_digests": hexes(ALPHA, GAMMA)},
         {"model_digests": "passed", "required_model_digests": "passed"}),
        ({"required_model_digests": hexes(BETA)},
         {"model_digests": "not_pinned", "required_model_digests": "passed"}),
        ({"required_model_digests": []},
         {"model_digests": "not_pinned", "required_model_digests": "passed"}),
    ],
    ids=["allowed_superset", "allowed_and_required", "required_only", "nothing_required"],
)
def test_several_models_pass_an_allowing_policy(verifier_for, issuer, policy, outcomes) -> None:
    identity = issuer.reissue(models=SERVED)
    result = verifier_for(simulated_td_policy(**policy)).attest(identity.certificate.der,
                                                                hostname=None)
    assert result.verified, result.errors
    assert {c.name: c.outcome for c in result.checks if c.name in outcomes} == outcomes


@pytest.mark.parametrize(
    ("policy", "check", "named", "outcomes"),
    [
        ({"allowed_model_digests": hexes(ALPHA, GAMMA)}, "model_digests", "beta",
         {"model_digests": "failed"}),
        ({"allowed_model_digests": hexes(*SERVED), "required_model_digests": hexes(ALPHA, OTHER)},
         "required_model_digests", OTHER_DIGEST.hex(),
         {"model_digests": "passed", "required_model_digests": "failed"}),
        ({"allowed_model_digests": [], "required_model_digests": hexes(ALPHA)}, "model_digests",
         "alpha", {"model_digests": "failed", "required_model_digests": "passed"}),
    ],
    ids=["one_disallowed", "required_missing", "empty_allowlist"],
)
def test_several_models_refused_by_the_policy_name_the_check(
    verifier_for, issuer, policy, check, named, outcomes
) -> None:
    identity = issuer.reissue(models=SERVED)
    with pytest.raises(AttestationRefused) as err:
        verifier_for(simulated_td_policy(**policy)).verify(identity.certificate.der,
                                                            hostname=None)
    cause = err.value.cause
    assert isinstance(cause, ModelDigestError) and cause.check == check
    assert named in str(cause)
    result = err.value.result
    assert result.errors[0].stage == "validate" and result.errors[0].check == check
    assert {c.name: c.outcome for c in result.checks if c.name in outcomes} == outcomes
    assert len(result.models) == 3  # what was served is reported even when refused


def test_nonce_mode_with_several_models_needs_a_model_event_for_each(
    verifier_for, sim_authority, names, clock
) -> None:
    # Measured in another order, with a model loaded and since unloaded in between.
    measured = [GAMMA.digest, OTHER_DIGEST, ALPHA.digest, BETA.digest]
    evidence, identity = evidence_measuring(sim_authority, names, clock, measured, SERVED)
    result = verifier_for().attest(identity.certificate.der, hostname=None, evidence=evidence,
                                   nonce=NONCE)
    assert result.verified, result.errors
    check = next(c for c in result.checks if c.name == "rtmr3_model_digests")
    assert check.outcome == "passed"
    assert check.expected == "[" + ", ".join(hexes(*SERVED)) + "]"


@pytest.mark.parametrize(
    ("measured", "missing"),
    [
        ([ALPHA.digest, GAMMA.digest], [BETA]),
        ([], [ALPHA, BETA, GAMMA]),
        ([RtmrEvent.from_data(2, MODEL_EVENT_TYPE, BETA.digest), ALPHA.digest, GAMMA.digest],
         [BETA]),
        ([RtmrEvent.from_data(3, "another.type", BETA.digest), ALPHA.digest, GAMMA.digest],
         [BETA]),
    ],
    ids=["one_never_loaded", "empty_log", "beta_on_rtmr2", "beta_as_another_type"],
)
def test_a_served_model_without_a_model_event_is_refused(
    verifier_for, sim_authority, names, clock, measured, missing
) -> None:
    evidence, identity = evidence_measuring(sim_authority, names, clock, measured, SERVED)
    with pytest.raises(AttestationRefused) as err:
        verifier_for().verify(identity.certificate.der, hostname=None, evidence=evidence,
                              nonce=NONCE)
    cause = err.value.cause
    assert isinstance(cause, ModelMeasurementError) and cause.check == "rtmr3_model_digests"
    assert cause.actual == "not measured: " + show([m.digest for m in missing])
    assert all(m.name in str(cause) for m in missing)


def test_model_events_without_data_are_compared_by_digest_for_several_models(
    verifier_for, sim_authority, names, clock
) -> None:
    measured = [m.digest for m in SERVED]
    evidence, identity = evidence_measuring(sim_authority, names, clock, measured, SERVED)
    events = [RtmrEvent(e.index, e.digest, e.event_type) for e in evidence.rtmr_event_log().events]
    bare = evidence.model_copy(update={"event_log": json.loads(RtmrEventLog(events).to_json())})
    result = verifier_for().attest(identity.certificate.der, hostname=None, evidence=bare,
                                   nonce=NONCE)
    assert result.verified, result.errors
