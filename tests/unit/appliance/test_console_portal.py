"""The console's pages and developer portal in-process (Flask test client), against simulated
TDs serving RA-TLS on loopback (support/ratls_fixtures.py: real TLS, real DCAP against the
simulated root, nonce evidence from the TD; time injected). The browser tests are
tests/integration/test_console_pages.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from support.console import write_pinned_policy, write_registry
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_world import NAMES

from appliance.console.app import CONTENT_SECURITY_POLICY
from appliance.console.registry import RegisteredEnclave
from appliance.console.settings import ConsoleSettings
from appliance.console.wiring import build_console_app
from appliance.status_push import CERTIFICATE_MEMBER, PUSH_PATH, STATUS_PUSH_PURPOSE
from attest.verify import DcapVerifier
from ratls.collateral import ServedCollateral
from ratls.issuer import Identity, IdentityIssuer
from ratls.signing import sign_json
from ratls.verifier import RatlsVerifier

TOKEN = "unit-management-token"
OTHER_MR_TD = "ab" * 48
HOSTILE = '<script>document.title="pwned"</script><img src=x>'
_SEQUENCE = itertools.count(1)


@dataclass
class Console:
    http: Any  # Flask test client
    clock: Any
    issuer: IdentityIssuer

    def push(self, identity: Identity, enclave_id: str, **status: Any) -> Any:
        payload = {"loaded_model": None, "loaded_model_digest": None, "proxy_status": "idle",
                   "proxy_progress": 0.0} | status | {
            "enclave_id": enclave_id, "time": self.clock().isoformat(),
            "sequence": next(_SEQUENCE)}
        document = sign_json(payload, purpose=STATUS_PUSH_PURPOSE,
                             private_key=identity.private_key,
                             certificate=identity.certificate.certificate) | {
            CERTIFICATE_MEMBER: identity.certificate.pem()}
        return self.http.post(PUSH_PATH, json=document,
                              headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def console(tmp_path: Path, authority, sim_root, clock, provider, serve) -> Console:
    """One TD registered twice: `good` under the pinned policy, `pinned-elsewhere` (its other
    name) under a policy pinning another MRTD."""
    issuer = IdentityIssuer(provider, NAMES, clock=clock)
    server = serve(issuer)
    other_url = server.url.replace("127.0.0.1", "localhost")
    assert other_url != server.url
    root = str(authority.directory / "root-ca.pem")
    registry = write_registry(tmp_path / "registry.toml", [
        {"id": "good", "url": server.url, "simulated_root": root,
         "policy": str(write_pinned_policy(tmp_path / "pinned.toml"))},
        {"id": "pinned-elsewhere", "url": other_url, "simulated_root": root,
         "policy": str(write_pinned_policy(tmp_path / "other.toml", mr_td=OTHER_MR_TD))},
    ])

    def make_verifier(enclave: RegisteredEnclave) -> RatlsVerifier:
        return RatlsVerifier(dcap=DcapVerifier(sim_root), policy=enclave.policy,
                             collateral=ServedCollateral(enclave.url), clock=clock)

    app = build_console_app(
        ConsoleSettings(registry=registry, state_db=tmp_path / "console.db",
                        management_token=TOKEN),
        clock=clock, make_verifier=make_verifier)
    return Console(app.test_client(), clock, issuer)


def test_attest_json_answers_the_challenge_with_nonce_evidence(console: Console) -> None:
    challenge = bytes(range(16, 48)).hex()
    response = console.http.get(f"/api/v1/apps/good/attest?challenge={challenge}")
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["verified"] is True and result["tee"] == "simulated"
    assert result["binding"] == result["binding"] | {"mode": "nonce", "held": True,
                                                     "nonce": challenge}
    assert {"mr_td", "rtmr", "report_data"} <= set(result["measurements"])
    assert result["certificate"]["sha256_fingerprint"]
    assert {check["name"] for check in result["checks"]} >= {"dcap", "key_binding"}

    # Without a challenge: a random nonce, a fresh quote all the same.
    response = console.http.get("/api/v1/apps/good/attest")
    assert response.status_code == 200
    binding = response.get_json()["binding"]
    assert binding["mode"] == "nonce" and binding["nonce"] != challenge


@pytest.mark.parametrize("challenge", ["", "zz" * 16, "ab" * 15, "ab" * 65, "abc" * 11])
def test_a_challenge_that_is_not_16_to_64_bytes_of_hex_is_a_400_envelope(
        console: Console, challenge: str) -> None:
    response = console.http.get(f"/api/v1/apps/good/attest?challenge={challenge}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_challenge" and error["param"] == "challenge"


def test_an_unknown_app_is_a_404_envelope_and_a_404_page(console: Console) -> None:
    response = console.http.get("/api/v1/apps/nobody/attest")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "app_not_found"
    page = console.http.get("/apps/%3Cb%3Enobody")
    assert page.status_code == 404 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "app_not_found" in text and "&lt;b&gt;nobody" in text and "<b>nobody" not in text


def test_a_refused_app_shows_the_failed_check_first(console: Console) -> None:
    result = console.http.get("/api/v1/apps/pinned-elsewhere/attest").get_json()
    assert result["verified"] is False
    page = console.http.get("/apps/pinned-elsewhere")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="verdict"' in text and ">REFUSED<" in text and "SIMULATED" in text
    assert '<code id="failed-check">mr_td</code>' in text
    assert text.index('id="failure"') < text.index('id="measurements"')
    first_check = text.split('class="check-name">', 1)[1].split("<", 1)[0]
    assert first_check == "mr_td"
    assert OTHER_MR_TD in text  # the expected value


def test_a_verified_app_page_shows_the_verdict_measurements_and_certificate(
        console: Console) -> None:
    result = console.http.get("/api/v1/apps/good/attest").get_json()
    text = console.http.get("/apps/good").get_data(as_text=True)
    assert ">VERIFIED<" in text and 'id="simulated"' in text and 'id="failure"' not in text
    assert result["measurements"]["mr_td"] in text
    assert result["certificate"]["sha256_fingerprint"] in text


def test_the_fleet_page_escapes_what_appliances_push(console: Console) -> None:
    identity = console.issuer.current()
    response = console.push(identity, "good", loaded_model=HOSTILE, proxy_status=HOSTILE)
    assert response.status_code == 200, response.get_json()
    page = console.http.get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert str(escape(HOSTILE)) in text
    assert "<script>document" not in text and "<img src=x>" not in text
    assert ">VERIFIED<" in text and 'data-enclave="good"' in text
    assert 'data-rendered-by="server"' in text


def test_every_response_carries_the_content_security_policy(console: Console) -> None:
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    for path in ("/", "/apps/nobody", "/api/v1/enclaves", "/static/fleet.js"):
        response = console.http.get(path)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = console.http.get("/").get_data(as_text=True)
    # No inline script or event handler: the CSP would block them, and the page needs none.
    assert "<script>" not in page and " onload=" not in page and " onclick=" not in page
    assert '<script src="/static/fleet.js" defer></script>' in page
