"""Nonce evidence: server side (real simulated quotes), echo checks, and the raw h11 exchange."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime

import pytest
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures

from attest.quote import parse_quote
from attest.simulated import SimulatedQuoteProvider
from ratls.connection import SocketChannel, request_nonce_evidence
from ratls.errors import BindingError, EvidenceUnavailableError, NonceError
from ratls.evidence import (
    NonceEvidence,
    check_nonce_evidence,
    make_nonce_evidence,
    parse_nonce_evidence,
    parse_nonce_hex,
)
from ratls.issuer import IdentityIssuer
from ratls.profile import nonce_report_data

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NONCE = bytes(range(32))


@pytest.fixture
def sim_provider(sim_authority) -> SimulatedQuoteProvider:
    return SimulatedQuoteProvider(sim_authority)


@pytest.fixture
def identity(sim_provider, names, clock):
    return IdentityIssuer(sim_provider, names, clock=clock).reissue(model_digest=b"\x11" * 32)


def test_nonce_evidence_binds_the_key_and_the_nonce(identity, sim_provider) -> None:
    evidence = make_nonce_evidence(identity, sim_provider, NONCE, now=NOW)
    quote = parse_quote(evidence.quote_bytes())
    assert quote.body.report_data == nonce_report_data(identity.certificate.spki, NONCE)
    assert evidence.nonce == NONCE.hex()
    assert evidence.certificate_sha256 == identity.fingerprint.hex()
    assert evidence.model_digest == "11" * 32
    assert evidence.tee == "simulated"
    # JSON round trip, and the echo checks pass against the connection's certificate.
    parsed = parse_nonce_evidence(evidence.model_dump_json().encode())
    assert parsed == evidence
    check_nonce_evidence(parsed, NONCE, identity.certificate)


@pytest.mark.parametrize("size", [15, 65])
def test_server_refuses_bad_nonces_before_quoting(identity, size) -> None:
    class Never:
        tee = "simulated"

        def get_quote(self, report_data: bytes) -> bytes:
            raise AssertionError("no quote for a bad nonce")

    with pytest.raises(NonceError):
        make_nonce_evidence(identity, Never(), bytes(size), now=NOW)


@pytest.mark.parametrize("text", ["", "zz" * 16, "00" * 15, "00" * 65, "0" * 33, "00" * 1000])
def test_bad_nonce_query_values_are_refused(text) -> None:
    with pytest.raises(NonceError):
        parse_nonce_hex(text)


def test_nonce_query_value_parses() -> None:
    assert parse_nonce_hex(NONCE.hex()) == NONCE


@pytest.mark.parametrize(
    ("field", "value"),
    [("nonce", "ff" * 32), ("certificate_sha256", "00" * 32), ("model_digest", None)],
)
def test_echo_mismatches_are_binding_errors(identity, sim_provider, field, value) -> None:
    evidence = make_nonce_evidence(identity, sim_provider, NONCE, now=NOW)
    with pytest.raises(BindingError) as err:
        check_nonce_evidence(
            evidence.model_copy(update={field: value}), NONCE, identity.certificate
        )
    assert err.value.check == field


@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"version": 2}', b"x" * (1024 * 1024 + 1)])
def test_malformed_evidence_is_refused(body) -> None:
    with pytest.raises(EvidenceUnavailableError):
        parse_nonce_evidence(body)


class RawServer:
    """Answers one request on a socket pair with fixed bytes, recording what it received."""

    def __init__(self, answer: bytes, *, close_after: bool = False) -> None:
        self.client, self.server = socket.socketpair()
        self.client.settimeout(5)
        self.answer, self.close_after = answer, close_after
        self.received = b""
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.server.recv(4096)
        self.received = data
        self.server.sendall(self.answer)
        if self.close_after:
            self.server.close()


def http_answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


@pytest.fixture
def evidence_json(identity, sim_provider) -> bytes:
    return make_nonce_evidence(identity, sim_provider, NONCE, now=NOW).model_dump_json().encode()


def test_exchange_sends_one_get_and_leaves_the_connection_usable(evidence_json) -> None:
    server = RawServer(http_answer(evidence_json))
    evidence = request_nonce_evidence(
        SocketChannel(server.client), authority="a.test:8443", nonce=NONCE
    )
    assert isinstance(evidence, NonceEvidence)
    server.thread.join(5)
    assert server.received.startswith(
        f"GET /v1/attestation?nonce={NONCE.hex()} HTTP/1.1\r\n".encode()
    )
    assert b"host: a.test:8443\r\n" in server.received.lower()


@pytest.mark.parametrize(
    ("answer", "close_after", "check"),
    [
        (http_answer(b"{}", "500 Internal Server Error"), False, "http_status"),
        (http_answer(b"EVIDENCE", extra=b"Connection: close\r\n"), False, "keep_alive"),
        (http_answer(b"EVIDENCE") + b"HTTP/1.1 200 OK\r\n", False, "keep_alive"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", True, "transport"),
        (b"garbage\r\n\r\n", False, "transport"),
    ],
)
def test_exchange_failures_are_named(evidence_json, answer, close_after, check) -> None:
    server = RawServer(answer.replace(b"EVIDENCE", evidence_json), close_after=close_after)
    with pytest.raises(EvidenceUnavailableError) as err:
        request_nonce_evidence(SocketChannel(server.client), authority="a.test", nonce=NONCE)
    assert err.value.check == check
