"""The console's push intake in-process, against simulated TDs serving RA-TLS on loopback
(support/ratls_fixtures.py: real TLS, real DCAP against the simulated root, real collateral
served by the TD; time injected). Here the tests hold the TDs' keys, so they sign what a
misbehaving appliance could: another enclave's id, a certificate without the registered host,
a push after the certificate expired."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.console import write_pinned_policy, write_registry
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_world import NAMES, CountingCollateral

from appliance.console.attestation import MakeVerifier
from appliance.console.registry import RegisteredEnclave
from appliance.console.settings import ConsoleSettings
from appliance.console.wiring import build_console_app
from appliance.status_push import CERTIFICATE_MEMBER, PUSH_PATH, STATUS_PUSH_PURPOSE
from attest.verify import DcapVerifier
from ratls.collateral import ServedCollateral
from ratls.issuer import Identity, IdentityIssuer
from ratls.profile import SubjectNames
from ratls.signing import sign_json
from ratls.verifier import RatlsVerifier

TOKEN = "unit-management-token"
_SEQUENCE = itertools.count(1)


def signed(identity: Identity, enclave_id: str, at: datetime, **status: Any) -> dict[str, Any]:
    """A push as appliance/supervisor/service.py signs it."""
    payload = {"loaded_model": None, "loaded_model_digest": None, "proxy_status": "idle",
               "proxy_progress": 0.0} | status | {
        "enclave_id": enclave_id, "time": at.isoformat(), "sequence": next(_SEQUENCE)}
    return sign_json(payload, purpose=STATUS_PUSH_PURPOSE, private_key=identity.private_key,
                     certificate=identity.certificate.certificate) | {
        CERTIFICATE_MEMBER: identity.certificate.pem()}


@dataclass
class World:
    http: Any  # Flask test client
    clock: Any
    issuers: dict[str, IdentityIssuer]  # by enclave id
    lookups: list[CountingCollateral]  # one collateral lookup per full verification

    def push(self, document: Any, token: str = TOKEN) -> Any:
        return self.http.post(PUSH_PATH, json=document,
                              headers={"Authorization": f"Bearer {token}"})

    def enclaves(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.http.get("/api/v1/enclaves").get_json()["enclaves"]}

    def verifications(self) -> int:
        return sum(counter.calls for counter in self.lookups)


@pytest.fixture
def world(tmp_path: Path, authority, sim_root, clock, provider, serve) -> Callable[..., World]:
    """`world(names=..., **settings)`: e-a and e-b, two TDs of one simulated platform with the
    same host names (`names` replaces e-b's), registered at their URLs, and a console."""

    def make(*, names: SubjectNames = NAMES, key_probe: Any = None, **settings: Any) -> World:
        issuers = {"e-a": IdentityIssuer(provider, NAMES, clock=clock),
                   "e-b": IdentityIssuer(provider, names, clock=clock)}
        servers = {enclave_id: serve(issuer) for enclave_id, issuer in issuers.items()}
        policy = write_pinned_policy(tmp_path / "policy.toml")
        registry = write_registry(tmp_path / "registry.toml", [
            {"id": enclave_id, "url": server.url, "policy": str(policy),
             "simulated_root": str(authority.directory / "root-ca.pem")}
            for enclave_id, server in servers.items()])
        lookups: list[CountingCollateral] = []

        def make_verifier(enclave: RegisteredEnclave) -> RatlsVerifier:
            lookups.append(CountingCollateral(ServedCollateral(enclave.url)))
            return RatlsVerifier(dcap=DcapVerifier(sim_root), policy=enclave.policy,
                                 collateral=lookups[-1], clock=clock)

        verifiers: MakeVerifier = make_verifier
        app = build_console_app(
            ConsoleSettings(registry=registry, state_db=tmp_path / "console.db",
                            management_token=TOKEN, **settings),
            clock=clock, make_verifier=verifiers,
            **({"key_probe": key_probe} if key_probe else {}))
        return World(app.test_client(), clock, issuers, lookups)

    return make


def test_a_push_is_verified_once_per_certificate_until_its_verdict_expires(world) -> None:
    w = world()
    identity = w.issuers["e-a"].current()
    for _ in range(3):
        w.clock.advance(timedelta(seconds=1))
        response = w.push(signed(identity, "e-a", w.clock()))
        assert response.status_code == 200, response.get_json()
    assert w.verifications() == 1
    entry = w.enclaves()["e-a"]
    assert entry["pushes_accepted"] == 3 and entry["attestation"]["verdict"] == "verified"
    assert entry["attestation"]["certificate_sha256"] == identity.fingerprint.hex()

    # A new certificate (a model loaded): verified again, and its digest is shown attested.
    digest = bytes(range(32))
    loaded = w.issuers["e-a"].reissue(model_digest=digest)
    w.clock.advance(timedelta(seconds=1))
    response = w.push(signed(loaded, "e-a", w.clock(), loaded_model="m",
                             loaded_model_digest=digest.hex(), proxy_status="ready",
                             proxy_progress=1.0))
    assert response.status_code == 200, response.get_json()
    assert w.verifications() == 2
    entry = w.enclaves()["e-a"]
    assert entry["status"]["model"] == "m" and entry["status"]["lifecycle"] == "ready"
    assert entry["attestation"]["model_digest"] == digest.hex()

    # Past the verdict's valid_until (the certificate's notAfter) the listing says so, and the
    # same certificate is verified anew (a kept verdict would accept it): refused, expired.
    valid_until = datetime.fromisoformat(entry["attestation"]["valid_until"])
    w.clock.now = valid_until + timedelta(seconds=1)
    assert w.enclaves()["e-a"]["attestation"]["verdict"] == "expired"
    refused = w.push(signed(loaded, "e-a", w.clock()))
    assert refused.status_code == 403, refused.get_json()
    assert refused.get_json()["error"]["code"] == "attestation_refused"
    assert "not_after" in refused.get_json()["error"]["message"]
    assert w.enclaves()["e-a"]["status"]["model"] == "m"  # what was accepted stays


def test_another_enclaves_key_is_refused_though_names_and_evidence_pass(world) -> None:
    w = world()
    a_identity = w.issuers["e-a"].current()
    response = w.push(signed(a_identity, "e-b", w.clock()))
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["error"]["code"] == "certificate_not_enclave"
    entry = w.enclaves()["e-b"]
    assert entry["status"] is None and entry["refusals"] == {"certificate_not_enclave": 1}
    assert entry["attestation"]["failed_check"] == "registered_url_key"
    # Refusals are kept for a while too: the same certificate again costs no verification.
    w.clock.advance(timedelta(seconds=1))
    assert w.push(signed(a_identity, "e-b", w.clock())).status_code == 403
    assert w.verifications() == 1
    # e-a's own push is accepted: the verdict is per enclave and certificate.
    assert w.push(signed(a_identity, "e-a", w.clock())).status_code == 200


def test_a_certificate_without_the_registered_host_is_not_the_enclaves(world) -> None:
    w = world(names=SubjectNames.parse(["elsewhere.example"]))
    response = w.push(signed(w.issuers["e-b"].current(), "e-b", w.clock()))
    assert response.status_code == 403, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "certificate_not_enclave" and "registered host" in error["message"]
    attestation = w.enclaves()["e-b"]["attestation"]
    assert (attestation["verdict"], attestation["failed_check"]) == ("refused", "hostname")


class FlakyProbe:
    """The real key probe, made to fail `failures` times first (the appliance unreachable)."""

    def __init__(self, failures: int) -> None:
        from appliance.console.key_probe import TlsKeyProbe

        self.inner, self.failures = TlsKeyProbe(timeout=5), failures

    def presented_key_sha256(self, url: str) -> bytes:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        return self.inner.presented_key_sha256(url)


def test_an_unreachable_appliance_is_no_verdict_and_is_not_cached(world) -> None:
    w = world(key_probe=FlakyProbe(failures=1))
    identity = w.issuers["e-a"].current()
    first = w.push(signed(identity, "e-a", w.clock()))
    assert first.status_code == 503 and first.get_json()["error"]["code"] == (
        "appliance_unreachable")
    w.clock.advance(timedelta(seconds=1))
    assert w.push(signed(identity, "e-a", w.clock())).status_code == 200
    assert w.enclaves()["e-a"]["refusals"] == {"appliance_unreachable": 1}


def test_structure_and_size_are_refused_before_any_verification(world) -> None:
    w = world(max_body_bytes=16 * 1024)
    identity = w.issuers["e-a"].current()
    too_large = w.push(signed(identity, "e-a", w.clock(), padding="x" * 20_000))
    assert too_large.status_code == 413 and too_large.get_json()["error"]["code"] == (
        "body_too_large")
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for body in (b"not json", b"[1, 2]", b'{"payload": {"enclave_id": "e-a"}, "x": NaN}'):
        response = w.http.post(PUSH_PATH, data=body, headers=headers)
        assert response.status_code == 400, body
        assert response.get_json()["error"]["code"] == "malformed_push"
    extra = signed(identity, "e-a", w.clock()) | {"note": "unsigned member"}
    assert w.push(extra).get_json()["error"]["code"] == "malformed_push"
    bad_pem = signed(identity, "e-a", w.clock()) | {CERTIFICATE_MEMBER: "-----BEGIN nothing"}
    assert w.push(bad_pem).get_json()["error"]["code"] == "malformed_push"
    bad_time = signed(identity, "e-a", w.clock())
    bad_time["payload"]["time"] = "yesterday"
    assert w.push(bad_time).get_json()["error"]["code"] == "malformed_push"
    assert w.verifications() == 0
    document = w.http.get("/api/v1/enclaves").get_json()
    assert document["unattributed_refusals"] == {"body_too_large": 1, "malformed_push": 3}
    assert document["enclaves"][0]["refusals"] == {"malformed_push": 3}


def test_a_push_at_the_age_bound_is_fresh_and_one_past_it_is_stale(world) -> None:
    w = world(max_push_age=60)
    identity = w.issuers["e-a"].current()
    at = w.clock()
    w.clock.advance(timedelta(seconds=60))
    assert w.push(signed(identity, "e-a", at)).status_code == 200
    stale = w.push(signed(identity, "e-a", at + timedelta(microseconds=1)))
    assert stale.status_code == 200  # later than the last accepted, and within the bound
    w.clock.advance(timedelta(seconds=1))
    stale = w.push(signed(identity, "e-a", at + timedelta(microseconds=2)))
    assert stale.status_code == 422 and stale.get_json()["error"]["code"] == "stale_push"


def test_reads_and_errors(world) -> None:
    w = world()
    assert w.http.get("/healthz").get_json() == {"status": "ok"}
    assert w.http.get("/nope").get_json()["error"]["code"] == "unknown_route"
    assert w.http.get(PUSH_PATH).status_code == 405
    document = w.http.get("/api/v1/enclaves").get_json()
    assert [e["id"] for e in document["enclaves"]] == ["e-a", "e-b"]
    assert all(e["attestation"]["verdict"] == "unknown" for e in document["enclaves"])
    metrics = w.http.get("/metrics")
    assert metrics.status_code == 200 and b"appliance_console_push_refusals" in metrics.data
