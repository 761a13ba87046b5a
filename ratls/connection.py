"""The gate every new client TLS connection passes before a request byte is sent on it.

Clients (the httpx transport, the requests adapter) call `ConnectionGate.admit` right after the
TLS handshake, with the peer's certificate and the raw TLS channel. The gate either returns the
AttestationResult or raises `AttestationRefused`; the client then closes the connection.

Verdicts are cached in the gate (so: in the client object) by (certificate SHA-256, host), until
the result's `valid_until` (the certificate's notAfter or the collateral's earliest nextUpdate,
whichever comes first). Refusals are not cached. With `require_nonce`, nothing is cached: each
connection gets a fresh nonce, asked for on that very connection (a raw HTTP/1.1 exchange with
h11) before the connection is handed to the HTTP client.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import h11

from ratls.clock import Clock
from ratls.errors import AttestationRefused, EvidenceUnavailableError
from ratls.evidence import MAX_EVIDENCE_SIZE, NonceEvidence, parse_nonce_evidence
from ratls.result import AttestationResult
from ratls.tls import client_ssl_context

if TYPE_CHECKING:
    from ratls.verifier import RatlsVerifier

log = logging.getLogger(__name__)

ATTESTATION_PATH = "/v1/attestation"
NONCE_SIZE = 32
MAX_CACHED_VERDICTS = 256
_READ_SIZE = 64 * 1024


class ByteChannel(Protocol):
    """The fresh TLS stream, before the HTTP client owns it."""

    def send(self, data: bytes) -> None: ...

    def receive(self, max_bytes: int) -> bytes:
        """Up to `max_bytes`; b"" at end of stream."""
        ...


class ConnectionGate:
    """Admits or refuses new TLS connections; holds the verdict cache of one client object."""

    def __init__(
        self,
        verifier: RatlsVerifier,
        *,
        clock: Clock,
        require_nonce: bool = False,
        insecure_skip_hostname_check: bool = False,
        max_cached: int = MAX_CACHED_VERDICTS,
    ) -> None:
        self._verifier = verifier
        self._clock = clock
        self.require_nonce = require_nonce
        self.insecure_skip_hostname_check = insecure_skip_hostname_check
        self._max_cached = max_cached
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[bytes, str], AttestationResult] = OrderedDict()
        self.last_result: AttestationResult | None = None

    def admit(
        self,
        certificate_der: bytes,
        *,
        host: str,
        port: int,
        channel: ByteChannel,
        nonce: bytes | None = None,
    ) -> AttestationResult:
        """Verify the server of a fresh connection; raises AttestationRefused (send nothing).

        `nonce`: with `require_nonce`, the caller's own (a tenant's challenge relayed by the
        portal); a random one otherwise.
        """
        hostname = None if self.insecure_skip_hostname_check else host
        key = (hashlib.sha256(certificate_der).digest(), host)
        now = self._clock()
        try:
            if not self.require_nonce:
                cached = self._cached(key, now)
                if cached is not None:
                    return cached
                result = self._verifier.verify(certificate_der, hostname=hostname, now=now)
            else:
                nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
                try:
                    evidence = request_nonce_evidence(
                        channel, authority=_authority(host, port), nonce=nonce
                    )
                except EvidenceUnavailableError as exc:
                    raise self._verifier.refusal(exc, now=now) from exc
                result = self._verifier.verify(
                    certificate_der, hostname=hostname, evidence=evidence, nonce=nonce, now=now
                )
        except AttestationRefused as refusal:
            self.last_result = refusal.result
            log.warning("refused %s:%d: %s", host, port, refusal)
            raise
        with self._lock:
            self.last_result = result
            if not self.require_nonce:
                self._cache[key] = result
                while len(self._cache) > self._max_cached:
                    self._cache.popitem(last=False)
        return result

    def _cached(self, key: tuple[bytes, str], now: datetime) -> AttestationResult | None:
        with self._lock:
            result = self._cache.get(key)
            if result is None:
                return None
            if result.valid_until is None or now >= result.valid_until:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return result


def _authority(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return host if port == 443 else f"{host}:{port}"


def request_nonce_evidence(channel: ByteChannel, *, authority: str, nonce: bytes) -> NonceEvidence:
    """`GET /v1/attestation?nonce=<hex>` on the raw channel; leaves it ready for the next request.

    The server must keep the connection open (HTTP/1.1 keep-alive) and send nothing more than
    its response, or the connection is not handed on.
    """
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=f"{ATTESTATION_PATH}?nonce={nonce.hex()}",
        headers=[("Host", authority), ("Accept", "application/json"), ("User-Agent", "ratls")],
    )
    try:
        channel.send(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, body = _read_response(conn, channel)
    except (OSError, h11.ProtocolError) as exc:
        raise EvidenceUnavailableError(
            f"nonce evidence exchange failed: {exc}", check="transport"
        ) from exc
    if status != 200:
        raise EvidenceUnavailableError(
            "nonce evidence request refused", check="http_status", expected=200, actual=status
        )
    if conn.their_state is not h11.DONE or conn.trailing_data[0]:
        raise EvidenceUnavailableError(
            "server did not leave the connection usable after the attestation response",
            check="keep_alive",
            expected="DONE, no extra bytes",
            actual=f"{conn.their_state.__name__}, {len(conn.trailing_data[0])} extra bytes",
        )
    return parse_nonce_evidence(body)


def _read_response(conn: h11.Connection, channel: ByteChannel) -> tuple[int, bytes]:
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(channel.receive(_READ_SIZE))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_EVIDENCE_SIZE:
                raise EvidenceUnavailableError(
                    "nonce evidence too large", check="size", expected=f"<= {MAX_EVIDENCE_SIZE}"
                )
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise EvidenceUnavailableError("server closed the connection", check="transport")


class _TlsStream(Protocol):
    """What `SocketChannel` needs: `ssl.SSLSocket`, or urllib3's `SSLTransport` (TLS in TLS)."""

    def sendall(self, data: bytes, /) -> object: ...

    def recv(self, max_bytes: int, /) -> bytes: ...


class SocketChannel:
    """A `ByteChannel` over a blocking TLS socket."""

    def __init__(self, sock: _TlsStream) -> None:
        self._sock = sock

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def receive(self, max_bytes: int) -> bytes:
        return self._sock.recv(max_bytes)


def probe(
    url: str,
    verifier: RatlsVerifier,
    *,
    clock: Clock,
    require_nonce: bool = False,
    nonce: bytes | None = None,
    insecure_skip_hostname_check: bool = False,
    timeout: float = 10.0,
) -> AttestationResult:
    """Handshake with the server at `url`, verify it, close: the result, verified or not.

    For the CLI and the developer portal (which attest a server without talking to it). Nothing
    but the handshake (and, with `require_nonce` or a `nonce`, the attestation request) is sent.
    A given `nonce` (16-64 bytes, checked by the server and the verifier) implies nonce mode.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url!r}")
    host, port = parts.hostname, parts.port or 443
    gate = ConnectionGate(
        verifier,
        clock=clock,
        require_nonce=require_nonce or nonce is not None,
        insecure_skip_hostname_check=insecure_skip_hostname_check,
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            server_hostname = None if _is_ip(host) else host
            with client_ssl_context().wrap_socket(raw, server_hostname=server_hostname) as tls:
                certificate = tls.getpeercert(binary_form=True)
                if not certificate:
                    raise EvidenceUnavailableError(
                        "server presented no certificate", check="peer_certificate"
                    )
                return gate.admit(
                    certificate, host=host, port=port, channel=SocketChannel(tls), nonce=nonce
                )
    except AttestationRefused as exc:
        return exc.result
    except (OSError, EvidenceUnavailableError) as exc:
        error = (
            exc
            if isinstance(exc, EvidenceUnavailableError)
            else EvidenceUnavailableError(f"cannot reach {host}:{port}: {exc}", check="transport")
        )
        return verifier.refusal(error, now=clock()).result


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
