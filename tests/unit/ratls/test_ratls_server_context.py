"""RotatingServerContext over real TLS on loopback: rotation without restart, TLS floor, failure."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures

from ratls.errors import IdentityUnavailableError
from ratls.issuer import IdentityIssuer
from ratls.server import RotatingServerContext

DIGEST = bytes.fromhex("cd" * 32)


class Acceptor:
    """Accepts connections and completes handshakes with whatever context `get_context` gives."""

    def __init__(self, get_context: Callable[[], ssl.SSLContext]) -> None:
        self.get_context = get_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[Exception] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.get_context().wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError, IdentityUnavailableError) as exc:
                self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()


def client_context(**settings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in settings.items():
        setattr(context, name, value)
    return context


def handshake(port: int, context: ssl.SSLContext | None = None, sni: str | None = None):
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        (context or client_context()).wrap_socket(raw, server_hostname=sni) as tls,
    ):
        return (
            hashlib.sha256(tls.getpeercert(binary_form=True)).digest(),
            tls.version(),
            tls.cipher(),
        )


@pytest.fixture
def issuer(provider, names, clock) -> IdentityIssuer:
    return IdentityIssuer(provider, names, clock=clock)


@pytest.fixture
def long_lived(issuer) -> Iterator[tuple[RotatingServerContext, Acceptor]]:
    # One context obtained once, as asyncio-style workers do: rotation must go through SNI.
    rotating = RotatingServerContext(issuer)
    context = rotating.context()
    acceptor = Acceptor(lambda: context)
    yield rotating, acceptor
    acceptor.close()


@pytest.mark.parametrize("sni", [None, "appliance.test"])
def test_new_handshakes_get_the_new_certificate_without_restart(issuer, long_lived, sni) -> None:
    _, acceptor = long_lived
    first = issuer.current()
    assert handshake(acceptor.port, sni=sni)[0] == first.fingerprint
    second = issuer.reissue(model_digest=DIGEST)
    assert handshake(acceptor.port, sni=sni)[0] == second.fingerprint


def test_renewal_before_expiry_reaches_new_handshakes(issuer, long_lived, clock) -> None:
    _, acceptor = long_lived
    first = issuer.current()
    clock.now = first.not_after - timedelta(minutes=30)
    fingerprint = handshake(acceptor.port)[0]
    assert fingerprint != first.fingerprint
    assert fingerprint == issuer.current().fingerprint


def test_per_connection_hook_serves_the_current_generation(issuer) -> None:
    rotating = RotatingServerContext(issuer)
    acceptor = Acceptor(lambda: rotating.gunicorn_hook(None, _must_not_be_called))
    try:
        assert handshake(acceptor.port)[0] == issuer.current().fingerprint
        issuer.reissue(model_digest=DIGEST)
        assert handshake(acceptor.port)[0] == issuer.current().fingerprint
    finally:
        acceptor.close()


def _must_not_be_called() -> ssl.SSLContext:
    raise AssertionError("the RA-TLS hook must not use gunicorn's certfile/keyfile context")


def test_context_is_rebuilt_only_when_the_generation_changes(issuer) -> None:
    rotating = RotatingServerContext(issuer)
    first = rotating.context()
    assert rotating.context() is first
    issuer.reissue(model_digest=DIGEST)
    assert rotating.context() is not first


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_is_refused_and_tls_1_2_uses_ecdhe_aead(long_lived) -> None:
    _, acceptor = long_lived
    old = client_context(maximum_version=ssl.TLSVersion.TLSv1_1)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(acceptor.port, old)
    _, version, cipher = handshake(
        acceptor.port, client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    )
    assert version == "TLSv1.2"
    assert cipher[0].startswith("ECDHE-ECDSA-") and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])


def test_tls_1_2_without_forward_secrecy_is_refused(long_lived) -> None:
    _, acceptor = long_lived
    weak = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    weak.set_ciphers("AES128-SHA:AES256-SHA")
    with pytest.raises(ssl.SSLError):
        handshake(acceptor.port, weak)


class BreakableChannel:
    """An identity source like the service's channel to its supervisor, which can break."""

    def __init__(self, issuer: IdentityIssuer) -> None:
        self.issuer = issuer
        self.broken = False

    def current(self):
        if self.broken:
            raise ConnectionRefusedError("supervisor socket gone")
        return self.issuer.current()


def test_failing_identity_source_aborts_the_handshake(issuer) -> None:
    channel = BreakableChannel(issuer)
    rotating = RotatingServerContext(channel)
    context = rotating.context()
    acceptor = Acceptor(lambda: context)
    try:
        handshake(acceptor.port)
        channel.broken = True
        with pytest.raises(ssl.SSLError, match=r"INTERNAL_ERROR|internal error"):
            handshake(acceptor.port)
        with pytest.raises(IdentityUnavailableError, match="supervisor socket gone"):
            rotating.context()
    finally:
        acceptor.close()
