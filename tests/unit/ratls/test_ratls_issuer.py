"""IdentityIssuer: what it binds, when it re-issues, generations, failures, concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures

from attest.quote import parse_quote
from ratls.errors import CertificateFormatError, IssuanceError
from ratls.issuer import Identity, IdentityIssuer
from ratls.profile import certificate_report_data, check_certificate, parse_certificate, spki_der
from ratls.served_models import ServedModel

DIGEST = bytes.fromhex("ab" * 32)


def test_first_identity_binds_key_and_not_before(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    identity = issuer.current()
    cert = identity.certificate
    assert identity.generation == 1
    assert identity.tee == "simulated"
    assert cert.not_before == clock.now.replace(second=0, microsecond=0)
    assert provider.requests == [certificate_report_data(cert.spki, cert.not_before)]
    assert parse_quote(identity.quote).body.report_data == provider.requests[0]
    assert identity.model_digest is None
    assert spki_der(identity.private_key.public_key()) == cert.spki


def test_current_reuses_the_identity_until_the_renewal_margin(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock, renew_before=timedelta(hours=1))
    first = issuer.current()
    clock.now = first.not_after - timedelta(hours=1, seconds=1)
    assert issuer.current() is first
    assert len(provider.requests) == 1
    clock.now = first.not_after - timedelta(hours=1)
    renewed = issuer.current()
    assert renewed.generation == 2
    assert renewed.not_after > first.not_after
    assert renewed.certificate.spki == first.certificate.spki  # one key per issuer
    assert len(provider.requests) == 2


def test_clock_going_back_before_not_before_reissues(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.current()
    clock.now = first.certificate.not_before - timedelta(minutes=5)
    assert issuer.current().generation == 2


def test_reissue_on_model_load_and_unload(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    issuer.current()
    loaded = issuer.reissue(model_digest=DIGEST)
    assert (loaded.generation, loaded.model_digest) == (2, DIGEST)
    clock.advance(timedelta(hours=23, minutes=30))
    renewed = issuer.current()  # renewal keeps the loaded model's digest
    assert (renewed.generation, renewed.model_digest) == (3, DIGEST)
    unloaded = issuer.reissue(model_digest=None)
    assert (unloaded.generation, unloaded.model_digest) == (4, None)


def test_bad_model_digest_changes_nothing(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.current()
    with pytest.raises(CertificateFormatError):
        issuer.reissue(model_digest=b"short")
    assert issuer.current() is first
    assert len(provider.requests) == 1


def test_provider_failure_is_an_issuance_error_and_keeps_the_old_identity(
    provider, names, clock
) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.current()
    provider.fail_with = OSError("tdx_guest: EBUSY")
    with pytest.raises(IssuanceError, match="EBUSY") as err:
        issuer.reissue(model_digest=DIGEST)
    assert err.value.check == "get_quote"
    assert issuer.current() is first


def test_concurrent_callers_at_expiry_cause_one_issuance(provider, names, clock) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.current()
    clock.now = first.not_after
    barrier = threading.Barrier(8)
    seen: list[Identity] = []

    def call() -> None:
        barrier.wait()
        seen.append(issuer.current())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i.generation for i in seen} == {2}
    assert len(provider.requests) == 2


def test_identity_from_parts_requires_the_matching_key(provider, names, clock) -> None:
    identity = IdentityIssuer(provider, names, clock=clock).current()
    der = identity.certificate.der
    pem = identity.private_key_pem()
    key = serialization.load_pem_private_key(pem, password=None)
    rebuilt = Identity.from_parts(generation=7, private_key=key, certificate_der=der, tee="tdx")
    assert (rebuilt.generation, rebuilt.fingerprint) == (7, identity.fingerprint)
    other = IdentityIssuer(provider, names, clock=clock).current().private_key
    with pytest.raises(IssuanceError) as err:
        Identity.from_parts(generation=7, private_key=other, certificate_der=der, tee="tdx")
    assert err.value.check == "key_match"


def test_private_key_does_not_appear_in_repr(provider, names, clock) -> None:
    identity = IdentityIssuer(provider, names, clock=clock).current()
    assert "PRIVATE" not in repr(identity)
    assert "private_key" not in repr(identity)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"validity": timedelta(minutes=1)},
        {"renew_before": timedelta(hours=24)},
        {"renew_before": timedelta(seconds=-1)},
    ],
)
def test_bad_settings_are_refused(provider, names, clock, kwargs) -> None:
    with pytest.raises(ValueError):
        IdentityIssuer(provider, names, clock=clock, **kwargs)


class LyingProvider:
    """A provider bug: quotes for other REPORTDATA, or bytes that are no quote."""

    tee = "simulated"

    def __init__(self, inner, *, garbage: bool) -> None:
        self.inner, self.garbage = inner, garbage

    def get_quote(self, report_data: bytes) -> bytes:
        if self.garbage:
            return b"not a quote"
        return self.inner.get_quote(bytes(64))


@pytest.mark.parametrize(("garbage", "check"), [(False, "report_data"), (True, "quote_format")])
def test_a_quote_that_does_not_bind_is_never_issued(provider, names, clock, garbage, check) -> None:
    issuer = IdentityIssuer(LyingProvider(provider, garbage=garbage), names, clock=clock)
    with pytest.raises(IssuanceError) as err:
        issuer.current()
    assert err.value.check == check


ALPHA = ServedModel("alpha", bytes.fromhex("a1" * 32))
BETA = ServedModel("beta", bytes.fromhex("b2" * 48))
GAMMA = ServedModel("gamma", bytes.fromhex("c3" * 64))


@pytest.mark.parametrize(
    ("models", "model_digest"),
    [((), None), ((ALPHA,), ALPHA.digest), ((GAMMA, ALPHA, BETA), None)],
    ids=["none", "one", "three"],
)
def test_issued_certificates_with_0_1_3_models_parse_back(
    provider, names, clock, models, model_digest
) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    identity = issuer.reissue(models=models)
    parsed = parse_certificate(identity.certificate.der)
    expected = tuple(sorted(models, key=lambda m: m.name))
    assert parsed.models == identity.models == expected
    assert parsed.model_digest == identity.model_digest == model_digest
    check_certificate(parsed, now=clock.now)
    clock.advance(timedelta(hours=23, minutes=30))
    assert issuer.current().models == expected  # renewal keeps the served models


def test_the_model_digest_keyword_keeps_issuing_the_single_model_form(provider, names,
                                                                      clock) -> None:
    identity = IdentityIssuer(provider, names, clock=clock).reissue(model_digest=DIGEST)
    assert identity.model_digest == DIGEST
    assert identity.models == (ServedModel(None, DIGEST),)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"models": [ALPHA, ServedModel("alpha", BETA.digest)]}, CertificateFormatError),
        ({"models": [ServedModel(f"m{i:02d}", DIGEST) for i in range(17)]},
         CertificateFormatError),
        ({"models": [ALPHA], "model_digest": DIGEST}, ValueError),
    ],
    ids=["duplicate_name", "seventeen", "both_forms"],
)
def test_a_bad_set_of_models_changes_nothing(provider, names, clock, kwargs, error) -> None:
    issuer = IdentityIssuer(provider, names, clock=clock)
    first = issuer.reissue(models=[ALPHA])
    with pytest.raises(error):
        issuer.reissue(**kwargs)
    assert issuer.current() is first
    assert len(provider.requests) == 1
