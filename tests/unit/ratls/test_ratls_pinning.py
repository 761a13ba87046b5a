"""ratls.pinning: a trust-on-first-use policy pins exactly what a verified result showed."""

from __future__ import annotations

import hashlib
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures
from support.ratls_unit_fixtures import START

from attest.collateral_load import collateral_from_bundle_json
from attest.roots import TrustRoot
from attest.simulated import SimulatedTd, simulated_collateral
from attest.verify import DcapVerifier
from ratls.collateral import StaticCollateral
from ratls.issuer import IdentityIssuer
from ratls.pinning import (
    UnverifiedObservation,
    policy_from_quote,
    policy_from_result,
    render_policy_toml,
)
from ratls.policy import AppraisalPolicy
from ratls.served_models import ServedModel
from ratls.verifier import RatlsVerifier

DIGEST = hashlib.sha256(b"model").digest()


@pytest.fixture
def observe(sim_authority, provider, names, clock):
    bundle = simulated_collateral(sim_authority, now=START).to_bundle_json()
    verifier = RatlsVerifier(
        dcap=DcapVerifier(TrustRoot(sim_authority.root_der)),
        policy=AppraisalPolicy.unsafe_unpinned(),
        collateral=StaticCollateral(collateral_from_bundle_json(bundle)),
        clock=clock,
    )
    issuer = IdentityIssuer(provider, names, clock=clock)
    return lambda: verifier.attest(
        issuer.reissue(model_digest=DIGEST).certificate.der, hostname=None
    )


def test_a_verified_result_becomes_a_policy_that_pins_it(observe) -> None:
    result = observe()
    policy = policy_from_result(result, source="https://a.test", pin_model_digest=True)
    td = SimulatedTd()
    assert policy.tdx.mr_td == (td.mr_td,)
    assert [policy.tdx.rtmr0, policy.tdx.rtmr1, policy.tdx.rtmr2] == [
        (r,) for r in td.initial_rtmrs[:3]
    ]
    assert policy.tdx.rtmr3 is None  # the runtime register: the model digest covers it
    assert policy.allowed_model_digests == {DIGEST}
    assert policy.unsafe_allow_unpinned is False
    assert policy.origin is not None
    assert (policy.origin.method, policy.origin.source) == ("trust-on-first-use", "https://a.test")
    assert policy.origin.certificate_sha256 == result.certificate.sha256_fingerprint


def test_the_rendered_file_reads_back_equal(observe) -> None:
    policy = policy_from_result(observe(), source='https://"quoted".test', pin_model_digest=True)
    text = render_policy_toml(policy, written_at=START)
    assert "TRUST ON FIRST USE" in text
    assert AppraisalPolicy.from_document(tomllib.loads(text)) == policy


def test_an_unverified_result_pins_nothing(observe) -> None:
    refused = observe().model_copy(update={"verified": False})
    with pytest.raises(UnverifiedObservation):
        policy_from_result(refused, source="x", pin_model_digest=False)


def test_a_model_digest_is_only_pinned_when_there_is_one(observe) -> None:
    without = observe().model_copy(update={"model_digest": None})
    with pytest.raises(UnverifiedObservation, match="no model"):
        policy_from_result(without, source="x", pin_model_digest=True)
    unpinned = policy_from_result(without, source="x", pin_model_digest=False)
    assert unpinned.allowed_model_digests is None


def test_a_quote_pins_the_same_registers(sim_authority, provider) -> None:
    bundle = simulated_collateral(sim_authority, now=START).to_bundle_json()
    from attest.quote import parse_quote

    verified = DcapVerifier(TrustRoot(sim_authority.root_der)).verify(
        parse_quote(provider.get_quote(bytes(64))), collateral_from_bundle_json(bundle), now=START
    )
    policy = policy_from_quote(verified, source="quote.bin", observed_at=START)
    assert policy.tdx.mr_td == (SimulatedTd().mr_td,)
    assert policy.origin is not None and policy.origin.tee == "simulated"


_hex48 = st.binary(min_size=48, max_size=48).map(bytes.hex)


@given(
    pins=st.fixed_dictionaries(
        {name: st.lists(_hex48, min_size=1, max_size=3) for name in ("mr_td", "rtmr0", "rtmr1")}
    ),
    validity=st.integers(min_value=1, max_value=24 * 30),
    source=st.text(min_size=1, max_size=40),
)
def test_any_policy_renders_and_reads_back(pins, validity, source) -> None:
    policy = AppraisalPolicy.from_document(
        {
            **pins,
            "max_certificate_validity_hours": validity,
            "origin": {"method": "trust-on-first-use", "source": source, "observed_at": "t"},
        }
    )
    assert AppraisalPolicy.from_document(
        tomllib.loads(render_policy_toml(policy, written_at=START))
    ) == policy


def test_several_served_models_are_all_pinned_and_read_back(sim_authority, provider, names,
                                                            clock) -> None:
    models = [ServedModel(name, hashlib.sha256(name.encode()).digest()) for name in "abc"]
    bundle = simulated_collateral(sim_authority, now=START).to_bundle_json()
    verifier = RatlsVerifier(
        dcap=DcapVerifier(TrustRoot(sim_authority.root_der)),
        policy=AppraisalPolicy.unsafe_unpinned(),
        collateral=StaticCollateral(collateral_from_bundle_json(bundle)),
        clock=clock,
    )
    identity = IdentityIssuer(provider, names, clock=clock).reissue(models=models)
    result = verifier.attest(identity.certificate.der, hostname=None)
    policy = policy_from_result(result, source="x", pin_model_digest=True)
    assert policy.allowed_model_digests == {m.digest for m in models}
    required = policy.with_required_model_digests([models[0].digest])
    text = render_policy_toml(required, written_at=START)
    assert f'required_model_digests = ["{models[0].digest.hex()}"]' in text
    assert AppraisalPolicy.from_document(tomllib.loads(text)) == required
