"""An `httpx.Client` that verifies RA-TLS on each new connection, for `openai.OpenAI(http_client=)`.

`AttestedTransport` is an `httpx.BaseTransport` over an `httpcore.ConnectionPool` whose network
backend verifies the peer inside the TLS upgrade: `start_tls` completes the handshake, passes
the certificate (and, in nonce mode, the raw stream) to the `ConnectionGate`, and only then
returns the stream to httpcore, which is what sends the request. A refused server gets nothing
but the TLS handshake; the connection is closed and `AttestationRefused` propagates (current
openai SDKs raise it unchanged and do not retry it; older ones wrap it in `APIConnectionError`,
with it as `__cause__`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from ratls.clock import Clock, system_clock
from ratls.connection import ConnectionGate
from ratls.errors import RatlsError
from ratls.misdirected import send_retrying_misdirected
from ratls.tls import client_ssl_context

if TYPE_CHECKING:
    from ratls.verifier import RatlsVerifier

# httpcore's exceptions, as the httpx exceptions callers (and the openai SDK) expect.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_exceptions() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _StreamChannel:
    """The gate's view of a fresh httpcore TLS stream (for the nonce exchange)."""

    def __init__(self, stream: httpcore.NetworkStream, timeout: float | None) -> None:
        self._stream, self._timeout = stream, timeout

    def send(self, data: bytes) -> None:
        self._stream.write(data, self._timeout)

    def receive(self, max_bytes: int) -> bytes:
        return self._stream.read(max_bytes, self._timeout)


class _AttestingStream(httpcore.NetworkStream):
    """A TCP stream whose TLS upgrade returns only after the gate admitted the server."""

    def __init__(self, inner: httpcore.NetworkStream, gate: ConnectionGate, host: str, port: int):
        self._inner, self._gate, self._host, self._port = inner, gate, host, port

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        try:
            ssl_object = tls.get_extra_info("ssl_object")
            # httpcore exposes the C-level SSL object: its getpeercert takes no keywords.
            certificate = ssl_object.getpeercert(True) if ssl_object else None
            if not certificate:
                raise RatlsError("server presented no certificate", check="peer_certificate")
            self._gate.admit(
                certificate,
                host=server_hostname or self._host,
                port=self._port,
                channel=_StreamChannel(tls, timeout),
            )
        except BaseException:
            tls.close()
            raise
        return tls


class _AttestingBackend(httpcore.NetworkBackend):
    def __init__(self, gate: ConnectionGate) -> None:
        self._inner = httpcore.SyncBackend()
        self._gate = gate

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AttestingStream(stream, self._gate, host, port)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise RatlsError("RA-TLS clients connect over TCP only", check="transport")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_exceptions():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _discard(response: httpx.Response) -> None:
    """Read a 421 and close its connection before httpcore can pool it again."""
    response.read()
    stream = response.extensions.get("network_stream")
    if stream is not None:
        stream.close()


class AttestedTransport(httpx.BaseTransport):
    """HTTPS only; every new connection passes `gate` before httpcore writes to it."""

    def __init__(self, gate: ConnectionGate, *, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits()
        self.gate = gate
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_AttestingBackend(gate),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # 421: the server's evidence changed since this connection was verified (e.g. a model was
        # loaded); see ratls.misdirected.
        return send_retrying_misdirected(
            lambda: self._send(request),
            status=lambda response: response.status_code,
            discard=_discard,
            replayable=isinstance(request.stream, httpx.ByteStream),
        )

    def _send(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            raise RatlsError(
                "RA-TLS clients send requests over https only",
                check="scheme",
                expected="https",
                actual=request.url.scheme,
            )
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise AssertionError("synchronous transport got an async request stream")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_exceptions():
            response = self._pool.handle_request(core_request)
        if not isinstance(response.stream, Iterable):
            raise AssertionError("synchronous pool returned an async response stream")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def attested_httpx_client(
    verifier: RatlsVerifier,
    *,
    require_nonce: bool = False,
    insecure_skip_hostname_check: bool = False,
    clock: Clock = system_clock,
    **client_options: Any,
) -> httpx.Client:
    """An httpx.Client for `openai.OpenAI(http_client=...)` that talks only to attested servers.

    `client_options` go to `httpx.Client` (timeout, headers, base_url, limits, ...).
    """
    gate = ConnectionGate(
        verifier,
        clock=clock,
        require_nonce=require_nonce,
        insecure_skip_hostname_check=insecure_skip_hostname_check,
    )
    return httpx_client_for(gate, **client_options)


def httpx_client_for(gate: ConnectionGate, **client_options: Any) -> httpx.Client:
    """An httpx.Client over `gate` (keep the gate to read `last_result`).

    `transport`, `verify`, `mounts`, proxies and HTTP/2 are refused: they would bypass the
    attested transport.
    """
    for option in ("transport", "verify", "mounts", "proxy", "trust_env", "http2"):
        if option in client_options:
            raise TypeError(f"{option!r} would bypass RA-TLS verification")
    transport = AttestedTransport(gate, limits=client_options.pop("limits", None))
    return httpx.Client(transport=transport, trust_env=False, **client_options)
