"""Acceptance: verifying clients against a real HTTPS server that presents RA-TLS evidence.

Every refusal test asserts on what the server received: nothing (or, in nonce mode, only the
attestation request), i.e. the client refused before sending a request byte.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from support.pinned import simulated_td_policy
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_server import COMPLETION_TEXT, MODEL
from support.ratls_world import NAMES, NOW, CountingCollateral, FixedSource

from attest.collateral_load import collateral_from_bundle_json
from attest.errors import PolicyError, VerificationError
from attest.quote import TD_ATTRIBUTE_DEBUG, TD_ATTRIBUTE_SEPT_VE_DISABLE
from attest.simulated import SimulatedQuoteProvider, SimulatedTd, simulated_collateral
from ratls.collateral import ServedCollateral, StaticCollateral
from ratls.errors import (
    AttestationRefused,
    BindingError,
    CertificateError,
    CertificateFormatError,
    HostnameMismatchError,
    ModelDigestError,
    RatlsError,
)
from ratls.httpx_client import attested_httpx_client
from ratls.issuer import Identity, IdentityIssuer
from ratls.misdirected import MISDIRECTED_RETRIES
from ratls.profile import RatlsCertificate, build_certificate, parse_certificate, spki_der
from ratls.requests_adapter import attested_session

DIGEST = hashlib.sha256(b"model image v1").digest()
OTHER_DIGEST = hashlib.sha256(b"model image v2").digest()
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def fetch(kind: str, verifier, url: str, clock, **options) -> str:
    """One chat completion through the verifying client of `kind`; returns the answer text."""
    response = post_chat(kind, verifier, url, clock, **options)
    assert response.status_code == 200
    return response.json()["choices"][0]["message"]["content"]


def post_chat(kind: str, verifier, url: str, clock, *, replayable: bool = True, **options):
    """The response to one chat request; `replayable=False` sends the body from a stream."""
    body = json.dumps(CHAT).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if kind == "httpx":
        with attested_httpx_client(verifier, clock=clock, **options) as client:
            content = body if replayable else iter([body])
            return client.post(f"{url}/v1/chat/completions", content=content, headers=headers)
    with attested_session(verifier, clock=clock, **options) as session:
        data = body if replayable else io.BytesIO(body)
        return session.post(f"{url}/v1/chat/completions", data=data, headers=headers)


def refused(kind: str, verifier, url: str, clock, **options) -> AttestationRefused:
    with pytest.raises(AttestationRefused) as err:
        fetch(kind, verifier, url, clock, **options)
    return err.value


CLIENTS = ["httpx", "requests"]


# -- accepted ---------------------------------------------------------------------------------


def test_openai_sdk_completes_through_the_verifying_client(server, make_verifier, clock) -> None:
    http_client = attested_httpx_client(make_verifier(), clock=clock)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", http_client=http_client)
    completion = client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert completion.choices[0].message.content == COMPLETION_TEXT
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=MODEL, messages=CHAT["messages"], stream=True
        )
    )
    assert streamed.strip() == COMPLETION_TEXT
    assert client.models.list().data[0].id == MODEL


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_verifies_then_requests(kind, server, make_verifier, clock) -> None:
    assert fetch(kind, make_verifier(), server.url, clock) == COMPLETION_TEXT
    assert server.connections[0].requests == ["POST /v1/chat/completions"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_retries_421_on_a_new_verified_connection(
    kind, server, make_verifier, clock
) -> None:
    server.misdirect_posts = 2
    # Nonce mode makes each connection's verification visible: its attestation request comes first.
    assert fetch(kind, make_verifier(), server.url, clock, require_nonce=True) == COMPLETION_TEXT
    posts = [c.requests for c in server.connections if c.requests]
    assert posts == [["GET /v1/attestation", "POST /v1/chat/completions"]] * 3


@pytest.mark.parametrize("kind", CLIENTS)
def test_client_gives_up_after_bounded_421_retries(kind, server, make_verifier, clock) -> None:
    server.misdirect_posts = 100
    response = post_chat(kind, make_verifier(), server.url, clock)
    assert response.status_code == 421 and b"superseded" in response.content
    assert server.misdirect_posts == 100 - 1 - MISDIRECTED_RETRIES


@pytest.mark.parametrize("kind", CLIENTS)
def test_421_to_a_streamed_body_goes_back_to_the_caller(kind, server, make_verifier, clock) -> None:
    server.misdirect_posts = 1
    response = post_chat(kind, make_verifier(), server.url, clock, replayable=False)
    assert response.status_code == 421 and b"superseded" in response.content
    assert server.misdirect_posts == 0
    assert [c.requests for c in server.connections] == [["POST /v1/chat/completions"]]


@pytest.mark.parametrize("kind", CLIENTS)
def test_collateral_served_by_the_appliance(kind, server, make_verifier, clock) -> None:
    verifier = make_verifier(collateral=ServedCollateral(server.url))
    assert fetch(kind, verifier, server.url, clock) == COMPLETION_TEXT
    # The collateral came over a second connection, opened while the first was being verified.
    assert [c.requests for c in server.connections] == [
        ["POST /v1/chat/completions"],
        ["GET /v1/attestation/collateral"],
    ]


@pytest.mark.parametrize("kind", CLIENTS)
def test_nonce_mode_asks_on_the_same_connection(kind, server, make_verifier, clock) -> None:
    assert fetch(kind, make_verifier(), server.url, clock, require_nonce=True) == COMPLETION_TEXT
    assert server.connections[0].requests == ["GET /v1/attestation", "POST /v1/chat/completions"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_model_digest_in_the_allowlist_is_accepted(
    kind, serve, issuer, make_verifier, clock
) -> None:
    issuer.reissue(model_digest=DIGEST)
    server = serve(issuer)
    policy = simulated_td_policy().with_model_digests([DIGEST, OTHER_DIGEST])
    assert fetch(kind, make_verifier(policy=policy), server.url, clock) == COMPLETION_TEXT


# -- refused before any request byte ------------------------------------------------------------


def assert_nothing_sent(server) -> None:
    """The client's connection (the first; a collateral fetch would come second) got nothing."""
    assert server.received_until_closed(0) == b""


@pytest.mark.parametrize("kind", CLIENTS)
def test_quote_transplanted_into_a_certificate_with_another_key(
    kind, serve, issuer, make_verifier, clock
) -> None:
    genuine = issuer.current()
    key = ec.generate_private_key(ec.SECP256R1())
    forged = build_certificate(
        key,
        names=NAMES,
        quote=genuine.quote,
        model_digest=None,
        not_before=genuine.certificate.not_before,
    )
    server = serve(
        FixedSource(
            Identity(
                generation=1,
                private_key=key,
                tee="simulated",
                certificate=parse_certificate(_der(forged)),
            )
        )
    )
    error = refused(kind, make_verifier(), server.url, clock)
    assert refused_by(error, BindingError, "key_binding")
    assert error.result.binding.held is False
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_expired_certificate(kind, serve, provider, make_verifier, clock) -> None:
    old = IdentityIssuer(provider, NAMES, clock=lambda: NOW - timedelta(hours=25)).current()
    server = serve(FixedSource(old))
    error = refused(kind, make_verifier(), server.url, clock)
    assert refused_by(error, CertificateError, "not_after")
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_certificate_without_quote_extension(kind, serve, make_verifier, clock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bare = build_certificate(key, names=NAMES, quote=None, model_digest=None, not_before=NOW)
    server = serve(FixedSource(_unchecked_identity(key, _der(bare))))
    error = refused(kind, make_verifier(), server.url, clock)
    assert refused_by(error, CertificateFormatError, "quote_extension")
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("field", ["mr_td", "rtmr2"])
def test_wrong_measurement(kind, field, server, make_verifier, clock) -> None:
    policy = simulated_td_policy(**{field: ["ab" * 48]})
    error = refused(kind, make_verifier(policy=policy), server.url, clock)
    assert refused_by(error, PolicyError)
    assert field.replace("rtmr2", "rtmr") in (error.cause.check or "")
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_debug_td(kind, serve, authority, clock, make_verifier) -> None:
    debug_td = SimulatedTd(td_attributes=TD_ATTRIBUTE_SEPT_VE_DISABLE | TD_ATTRIBUTE_DEBUG)
    debug_provider = SimulatedQuoteProvider(authority, debug_td)
    server = serve(IdentityIssuer(debug_provider, NAMES, clock=clock), provider=debug_provider)
    error = refused(kind, make_verifier(), server.url, clock)
    assert refused_by(error, PolicyError)
    assert "debug" in str(error.cause).lower()
    assert error.result.measurements.debug is True
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_tcb_status_outside_the_policy(
    kind, serve, issuer, authority, make_verifier, clock
) -> None:
    out_of_date = simulated_collateral(
        authority, now=NOW, tcb_status="OutOfDate", advisory_ids=["INTEL-SA-00837"]
    ).to_bundle_json()
    server = serve(issuer, collateral_json=out_of_date)
    verifier = make_verifier(collateral=ServedCollateral(server.url))
    error = refused(kind, verifier, server.url, clock)
    assert refused_by(error, PolicyError)
    assert error.result.tcb_status == "OutOfDate"
    assert server.connections[1].requests == ["GET /v1/attestation/collateral"]
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_model_digest_outside_the_allowlist(kind, serve, issuer, make_verifier, clock) -> None:
    issuer.reissue(model_digest=OTHER_DIGEST)
    server = serve(issuer)
    policy = simulated_td_policy().with_model_digests([DIGEST])
    error = refused(kind, make_verifier(policy=policy), server.url, clock)
    assert refused_by(error, ModelDigestError, "model_digest")
    assert error.result.model_digest == OTHER_DIGEST.hex()
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_no_model_loaded_fails_a_pinned_allowlist(kind, server, make_verifier, clock) -> None:
    policy = simulated_td_policy().with_model_digests([DIGEST])
    error = refused(kind, make_verifier(policy=policy), server.url, clock)
    assert refused_by(error, ModelDigestError, "model_digest")
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
def test_simulated_evidence_without_the_simulated_root(kind, server, make_verifier, clock) -> None:
    verifier = make_verifier(root=None, collateral=ServedCollateral(server.url))
    error = refused(kind, verifier, server.url, clock)
    assert refused_by(error, VerificationError)
    assert error.result.tee is None
    assert_nothing_sent(server)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(("lie", "check"), [("echo", "nonce"), ("quote", "key_binding")])
def test_nonce_answer_for_another_nonce(
    kind, lie, check, serve, issuer, make_verifier, clock
) -> None:
    other = bytes(32)
    if lie == "echo":  # evidence honestly made for another nonce
        server = serve(issuer, answer_nonce=lambda nonce: other)
    else:  # evidence that echoes our nonce but carries a quote for another
        server = serve(issuer, forge_nonce_quote=other)
    error = refused(kind, make_verifier(), server.url, clock, require_nonce=True)
    assert refused_by(error, BindingError, check)
    received = server.received_until_closed(0)
    assert received.startswith(b"GET /v1/attestation?nonce=")
    assert received.count(b"HTTP/1.1") == 1  # the attestation request only


@pytest.mark.parametrize("kind", CLIENTS)
def test_hostname_not_in_the_certificate(kind, serve, provider, make_verifier, clock) -> None:
    other_names = IdentityIssuer(provider, type(NAMES).parse(["appliance.example"]), clock=clock)
    server = serve(other_names)
    error = refused(kind, make_verifier(), server.url, clock)
    assert refused_by(error, HostnameMismatchError, "hostname")
    assert_nothing_sent(server)
    assert (
        fetch(kind, make_verifier(), server.url, clock, insecure_skip_hostname_check=True)
        == COMPLETION_TEXT
    )


def test_openai_sdk_surfaces_the_refusal(serve, issuer, make_verifier, clock) -> None:
    issuer.reissue(model_digest=OTHER_DIGEST)
    server = serve(issuer)
    policy = simulated_td_policy().with_model_digests([DIGEST])
    http_client = attested_httpx_client(make_verifier(policy=policy), clock=clock)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="unused", http_client=http_client, max_retries=0
    )
    # The SDK passes non-transport errors through unchanged (and does not retry them).
    with pytest.raises(AttestationRefused) as err:
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert refused_by(err.value, ModelDigestError, "model_digest")
    assert len(server.connections) == 1
    assert_nothing_sent(server)


def test_plain_http_is_refused(make_verifier, clock) -> None:
    with (
        attested_httpx_client(make_verifier(), clock=clock) as client,
        pytest.raises(RatlsError, match="https only"),
    ):
        client.get("http://127.0.0.1:9/v1/models")
    with (
        attested_session(make_verifier(), clock=clock) as session,
        pytest.raises(RatlsError, match="https only"),
    ):
        session.get("http://127.0.0.1:9/v1/models")


# -- rotation and the verdict cache ----------------------------------------------------------------


def one_connection_per_request(kind: str, verifier, clock):
    if kind == "httpx":
        client = attested_httpx_client(
            verifier, clock=clock, limits=httpx.Limits(max_keepalive_connections=0)
        )
        return client, lambda url: client.get(f"{url}/v1/models").json()
    session = attested_session(verifier, clock=clock)
    return session, lambda url: session.get(
        f"{url}/v1/models", headers={"Connection": "close"}
    ).json()


@pytest.mark.parametrize("kind", CLIENTS)
def test_rotation_reaches_new_connections_and_is_reverified(
    kind, server, issuer, make_verifier, collateral_json, clock
) -> None:
    counting = CountingCollateral(StaticCollateral(collateral_from_bundle_json(collateral_json)))
    client, get = one_connection_per_request(kind, make_verifier(collateral=counting), clock)
    with client:
        assert get(server.url)["data"][0]["digest"] is None
        get(server.url)
        assert counting.calls == 1  # the second connection used the cached verdict
        issuer.reissue(model_digest=DIGEST)
        assert get(server.url)["data"][0]["digest"] == DIGEST.hex()
        assert counting.calls == 2  # a new certificate is verified afresh
    fingerprints = [c.certificate_sha256 for c in server.connections]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


@pytest.mark.parametrize("kind", CLIENTS)
def test_cached_verdict_expires_with_the_collateral(
    kind, serve, issuer, authority, make_verifier, clock
) -> None:
    short = simulated_collateral(authority, now=NOW, validity=timedelta(hours=2)).to_bundle_json()
    server = serve(issuer, collateral_json=short)
    counting = CountingCollateral(ServedCollateral(server.url))
    client, get = one_connection_per_request(kind, make_verifier(collateral=counting), clock)
    with client:
        get(server.url)
        clock.advance(timedelta(minutes=50))  # collateral valid until NOW + 1 h
        get(server.url)
        assert counting.calls == 1
        clock.advance(timedelta(minutes=15))
        with pytest.raises(AttestationRefused) as err:
            get(server.url)
    assert counting.calls == 2
    assert "expired" in str(err.value.cause).lower() or "next" in str(err.value.cause).lower()


# -- helpers -----------------------------------------------------------------------------------


def refused_by(error: AttestationRefused, kind: type[Exception], check: str | None = None) -> bool:
    """The typed error that decided the refusal is a `kind`, naming `check` when given."""
    assert isinstance(error.cause, kind), repr(error.cause)
    assert error.result.errors[0].type == type(error.cause).__name__
    if check is not None:
        assert error.cause.check == check, error.cause
    return True


def _der(certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _unchecked_identity(key, der: bytes) -> Identity:
    """An identity around a certificate that is not profile v1 (a server may present anything)."""
    cert = x509.load_der_x509_certificate(der)
    return Identity(
        generation=1,
        private_key=key,
        tee="simulated",
        certificate=RatlsCertificate(
            certificate=cert,
            der=der,
            fingerprint=hashlib.sha256(der).digest(),
            spki=spki_der(key.public_key()),
            quote=b"",
            model_digest=None,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            dns_names=NAMES.dns_names,
            ip_addresses=NAMES.ip_addresses,
        ),
    )


def test_proxies_are_refused_not_bypassed(server, make_verifier, clock) -> None:
    with (
        attested_session(make_verifier(), clock=clock) as session,
        pytest.raises(RatlsError, match="proxies") as err,
    ):
        session.get(f"{server.url}/v1/models", proxies={"https": "http://127.0.0.1:9"})
    assert err.value.check == "proxy"
    assert server.connections == []


@pytest.mark.parametrize("option", ["transport", "verify", "mounts", "proxy", "http2"])
def test_httpx_options_that_would_bypass_verification_are_refused(make_verifier, option) -> None:
    with pytest.raises(TypeError, match="bypass"):
        attested_httpx_client(make_verifier(), **{option: None})
