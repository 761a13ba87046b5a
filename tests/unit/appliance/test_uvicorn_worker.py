"""The API worker's HTTP protocol in a real uvicorn server (uvloop, RA-TLS rotating context) on
loopback: each request's scope carries the TLS of its own connection, across an identity rotation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.worker.uvicorn_worker import (
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    ApplianceWorker,
    ConnectionLimits,
    RatlsHttpToolsProtocol,
    RatlsServer,
)
from ratls.issuer import IdentityIssuer
from ratls.server import RotatingServerContext, presented_identity


async def echo_tls(scope, receive, send) -> None:
    """Answers with what the scope says about the connection's TLS."""
    if scope["type"] != "http":
        return
    await receive()
    tls = scope["extensions"]["tls"]
    identity = presented_identity(scope["extensions"]["ratls"]["ssl_object"])
    certificate = x509.load_pem_x509_certificate(tls["server_cert"].encode())
    body = json.dumps({
        "server_cert_sha256": hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
        "tls_version": tls["tls_version"],
        "generation": identity.generation,
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


LIMITS = ConnectionLimits(head_timeout=1.0, body_timeout=1.0, send_timeout=1.0,
                          max_connections=100)


@pytest.fixture
def server(issuer: IdentityIssuer) -> Iterator[int]:
    protocol = functools.partial(RatlsHttpToolsProtocol, limits=LIMITS)
    config = uvicorn.Config(echo_tls, log_config=None,
                            **ApplianceWorker.CONFIG_KWARGS | {"lifespan": "off", "http": protocol})
    config.load()
    config.ssl = RotatingServerContext(issuer).context()
    listener = socket.create_server(("127.0.0.1", 0))
    instance = RatlsServer(config, handshake_timeout=LIMITS.head_timeout)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        instance.should_exit = True
        thread.join(10)
        listener.close()


class Connection:
    """One keep-alive HTTPS connection (TLS from the ssl module, no certificate checks)."""

    def __init__(self, port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.tls = context.wrap_socket(raw, server_hostname="localhost")
        self.peer_sha256 = hashlib.sha256(self.tls.getpeercert(binary_form=True)).hexdigest()

    def get(self) -> dict:
        self.tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.tls.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += self.tls.recv(65536)
        return json.loads(body)

    def close(self) -> None:
        self.tls.close()


def test_each_request_sees_the_identity_its_connection_presented(server: int,
                                                                  issuer: IdentityIssuer) -> None:
    before = Connection(server)
    first = before.get()
    assert first["server_cert_sha256"] == before.peer_sha256 == issuer.current().fingerprint.hex()
    assert first["generation"] == issuer.current().generation
    assert first["tls_version"] in (0x0303, 0x0304)

    issuer.reissue(model_digest=bytes.fromhex("cd" * 32))
    # The old connection keeps its identity (requests on it are checked against it: 421) ...
    again = before.get()
    assert again == first
    # ... and a new one gets the rotated identity, from the long-lived context's SNI callback.
    after = Connection(server)
    second = after.get()
    assert second["server_cert_sha256"] == after.peer_sha256 == issuer.current().fingerprint.hex()
    assert second["server_cert_sha256"] != first["server_cert_sha256"]
    assert second["generation"] == issuer.current().generation > first["generation"]
    before.close()
    after.close()


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * MAX_HEAD_BYTES + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADER_FIELDS + 1))
    + b"\r\n",
])
def test_an_oversized_request_head_is_refused_and_the_connection_closed(
    server: int, head: bytes
) -> None:
    connection = Connection(server)
    connection.tls.sendall(head)
    answer = b""
    while chunk := connection.tls.recv(65536):  # until the server closes the connection
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    connection.close()


def test_a_head_within_the_bounds_is_served(server: int) -> None:
    connection = Connection(server)
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 500) for i in range(MAX_HEADER_FIELDS - 2))
    connection.tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    answer = connection.tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    connection.close()


def closed_within(connection: Connection, seconds: float) -> float:
    started = time.monotonic()
    connection.tls.settimeout(seconds)
    try:
        while connection.tls.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None
    return time.monotonic() - started


def test_blank_lines_between_requests_do_not_hold_a_connection(server: int) -> None:
    # A byte resets uvicorn's keep-alive timeout; the head deadline is not reset by blank lines.
    connection = Connection(server)
    assert connection.get()["generation"] >= 1
    started = time.monotonic()
    try:
        for _ in range(10):
            connection.tls.sendall(b"\r\n")
            time.sleep(0.3)
    except OSError:
        pass
    closed_within(connection, 1.0)
    assert time.monotonic() - started < LIMITS.head_timeout + 1.5


def test_a_whole_request_arms_no_deadline_that_outlives_it(server: int) -> None:
    # Requests on a kept-alive connection, spread past the head deadline: each arrives whole.
    connection = Connection(server)
    for _ in range(3):
        assert connection.get()["tls_version"] in (0x0303, 0x0304)
        time.sleep(LIMITS.head_timeout * 0.7)
    connection.close()
