"""No TLS session resumption: a resumed handshake sends no certificate, so what the client
verified would no longer be what the server presents (e.g. after a model load)."""

from __future__ import annotations

import socket
import ssl

import pytest
from support.ratls_fixtures import *  # noqa: F403 - fixtures

from ratls.tls import client_ssl_context, server_ssl_context, turn_off_session_cache


def _exchange(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(
        raw, session=session
    ) as tls:
        tls.sendall(
            b"GET /v1/attestation/collateral HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        while tls.recv(65536):  # read to the end: TLS 1.3 tickets arrive after the handshake
            pass
        return tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_client_offering_its_last_session_gets_a_full_handshake(server, version) -> None:
    context = client_ssl_context()
    context.maximum_version = version
    session, reused = _exchange(server.port, context, None)
    assert not reused
    for _ in range(3):
        _, reused = _exchange(server.port, context, session)
        assert reused is False


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_no_resumption_across_a_new_identity(server, issuer, version) -> None:
    context = client_ssl_context()
    context.maximum_version = version
    session, _ = _exchange(server.port, context, None)
    issuer.reissue(model_digest=bytes(32))
    _, reused = _exchange(server.port, context, session)
    assert reused is False


def test_the_server_context_has_no_tickets_and_no_cache() -> None:
    context = server_ssl_context()
    assert context.options & ssl.OP_NO_TICKET and context.num_tickets == 0
    # Turning the cache off is idempotent and verified against OpenSSL's view of the context.
    assert turn_off_session_cache(context) is True
