"""Which RA-TLS identity a request's connection presented (`connection_identity`)."""

from __future__ import annotations

import ssl

from appliance.worker.identity import connection_identity
from ratls.issuer import IdentityIssuer
from ratls.server import RotatingServerContext


def handshake_in_memory(server_context: ssl.SSLContext) -> ssl.SSLObject:
    """The server side of a TLS connection whose handshake is complete (over memory BIOs)."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_out, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(to_server, server_out, server_side=True)
    done: set[str] = set()
    for _ in range(10):
        for name, side, out, peer_in in (("client", client, client_out, to_server),
                                         ("server", server, server_out, to_client)):
            try:
                side.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == {"client", "server"}:
            return server
    raise AssertionError("the in-memory handshake did not complete")


def test_without_tls_it_is_the_current_identity(issuer: IdentityIssuer) -> None:
    assert connection_identity(None, issuer).fingerprint == issuer.current().fingerprint


def test_a_connection_keeps_the_identity_of_its_handshake_across_a_rotation(
        issuer: IdentityIssuer) -> None:
    presented = issuer.current()
    connection = handshake_in_memory(RotatingServerContext(issuer).context())
    issuer.reissue(model_digest=bytes.fromhex("cd" * 32))
    assert issuer.current().fingerprint != presented.fingerprint
    assert connection_identity(connection, issuer).fingerprint == presented.fingerprint
