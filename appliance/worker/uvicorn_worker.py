"""The gunicorn worker class of the API server: uvicorn (httptools, uvloop) serving RA-TLS.

gunicorn stays the process manager (workers, graceful stop, the child_exit hook, the JSON logger);
each worker runs one uvicorn server on an event loop. Two things differ from a stock
`UvicornWorker`:

* TLS comes from gunicorn's `ssl_context` hook (the RA-TLS rotating context), never from files:
  gunicorn gets no `certfile`. The context is built once per worker; its SNI callback swaps in the
  newest identity on every handshake.
* The HTTP protocol puts the connection's TLS into each request's scope, because RA-TLS needs
  the identity the connection presented (`ratls.server.presented_identity`), per request; and it
  joins the writes of one loop turn (a response's head and body) into one TLS record.
* What one client can hold is bounded (`ConnectionLimits`, docs/design.md §10): deadlines for the
  TLS handshake and the request head, for the body, and for a response nobody reads, and a cap
  on a worker's connections. uvicorn has only an idle keep-alive timeout, which any byte resets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import ssl
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import uvicorn
from gunicorn.arbiter import Arbiter
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from appliance.errors import ServiceUnavailable
from appliance.worker.asgi_http import Receive, Scope, Send, send_error
from ratls.server import presented_identity

log = logging.getLogger(__name__)

# RFC 8446 / 5246 protocol versions, as the ASGI TLS extension wants them.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# Bounds of a request's head (gunicorn's were 4094 bytes of request line and 100 fields of 8190):
# llhttp bounds neither and uvicorn's httptools protocol keeps the whole head in memory.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100


class HeadTooLarge(Exception):
    """The request line and headers exceed MAX_HEAD_BYTES or MAX_HEADER_FIELDS."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client can hold of a worker (the settings of the same names, docs/design.md §10).

    head_timeout: seconds from the TCP accept (the TLS handshake counts) to the end of the first
    request head; on a kept-alive connection from the first byte of the next request.
    body_timeout: seconds from the end of a head to the end of its body.
    send_timeout: seconds a response may wait on a client that reads none of it.
    max_connections: connections per worker; a connection beyond them is answered 503.
    """

    head_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int


class LimitedApplication(Protocol):
    """The gunicorn application that runs this worker, as the worker reads it (ApiServer)."""

    connection_limits: ConnectionLimits


class RatlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the connection's TLS in `scope["extensions"]` (and its
    writes coalesced per loop turn, see `_CoalescingTransport`).

    `extensions["tls"]` has the ASGI TLS extension's shape; `extensions["ratls"]["ssl_object"]` is
    the `ssl.SSLObject` itself, from which the app reads the presented RA-TLS identity. A request
    head over MAX_HEAD_BYTES or MAX_HEADER_FIELDS is refused (400, connection closed). The
    deadlines of `limits` drop the connection (an abort: a client that does not read would hold
    a graceful close too); a connection over `limits.max_connections` gets 503 for its request.
    """

    _extensions: dict[str, Any] | None = None
    _head_bytes = 0

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        # Made on the TCP accept, before the TLS handshake (asyncio and uvloop alike).
        self._accepted = self.loop.time()
        self._read_deadline: asyncio.TimerHandle | None = None  # the head's or the body's
        self._send_deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # from a request's first byte to the end of its head
        self._in_body = False  # from the end of a head to the end of its body
        self._message_completed = False  # a request ended within the bytes just parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = _CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self._read_deadline = self.loop.call_at(self._accepted + self._limits.head_timeout,
                                                self._expire, "request head")
        if len(self.connections) > self._limits.max_connections:
            self.app = functools.partial(_over_capacity, self._limits.max_connections)
        # The handshake is over when the protocol gets the transport: the identity is final.
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._extensions = {
                "tls": {
                    "server_cert": presented_identity(ssl_object).certificate.pem(),
                    "client_cert_chain": [],
                    "client_cert_name": None,
                    "client_cert_error": None,
                    "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
                    "cipher_suite": None,
                },
                "ratls": {"ssl_object": ssl_object},
            }

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        self._cancel_send_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._message_completed = False
        super().data_received(data)
        # A deadline is armed only for what these bytes left incomplete: a request that arrives
        # whole (the usual case) costs no timer.
        if self._read_deadline is not None or self.transport.is_closing():
            return
        if self._in_body:
            self._read_deadline = self.loop.call_later(self._limits.body_timeout, self._expire,
                                                       "request body")
        elif self._in_head or not self._message_completed:
            # A partial head, or bytes that began none (blank lines between requests, which
            # would otherwise reset uvicorn's idle timeout forever).
            self._read_deadline = self.loop.call_later(self._limits.head_timeout, self._expire,
                                                       "request head")

    def on_message_begin(self) -> None:
        super().on_message_begin()  # builds a fresh self.scope for the request
        self._head_bytes = 0
        self._in_head = True
        if self._extensions is not None:
            self.scope["extensions"] = dict(self._extensions)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._cancel_read_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._message_completed = True
        self._cancel_read_deadline()
        super().on_message_complete()

    def pause_writing(self) -> None:
        # The transport's buffer is full: the client reads nothing (or too slowly).
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self._limits.send_timeout, self._expire,
                                                       "response send")

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_send_deadline()

    def _expire(self, what: str) -> None:
        self._cancel_read_deadline()
        self._cancel_send_deadline()
        log.info("dropping a connection: %s deadline passed", what)
        # The app sees a disconnect: a request reading its body gets ClientGone, and a stream's
        # receipt says client_disconnected.
        self.transport.abort()

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    # An exception in a parser callback makes httptools raise HttpParserError, which uvicorn
    # answers with a 400 and a closed connection.
    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        if len(self.headers) >= MAX_HEADER_FIELDS:
            raise HeadTooLarge(f"more than {MAX_HEADER_FIELDS} header fields")
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")


class _CoalescingTransport:
    """Holds writes until the end of the current loop turn, then writes them as one.

    uvicorn writes a response's head and its body separately (two ASGI messages), and a stream's
    events one by one; over TLS each write is a record and a send(). Joined, a response's head and
    body leave in one record, and so do events that the engine delivered together; nothing waits
    longer than the turn. Measured with bench/proxy.py (two runs each, shared machine): CPU per
    relayed event at concurrency 64 went from 45-50 us to 32-36 us; at concurrency 1 the
    difference is within the noise.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def close(self) -> None:
        self._flush()  # like any transport's close(): what was written is sent first
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class ApplianceWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": RatlsHttpToolsProtocol,  # given its ConnectionLimits in _serve
        "ws": "none",
        "lifespan": "on",
        # No client is trusted to set X-Forwarded-*; and no `server: uvicorn` advertisement.
        "proxy_headers": False,
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # In-flight requests (streams included) get gunicorn's graceful timeout on a stop.
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        # uvicorn's error log goes where every other line goes: the root logger's JSON handler.
        error_log = logging.getLogger("uvicorn.error")
        error_log.handlers = []
        error_log.propagate = True

    def init_signals(self) -> None:
        super().init_signals()
        # uvicorn re-raises the SIGTERM it stopped on once it is done; exiting 0 instead tells
        # gunicorn's master this was the graceful stop it asked for (no "Worker was sent SIGTERM!"
        # error line).
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))

    async def _serve(self) -> None:
        # uvicorn's Server.serve skips load() once the config is loaded, so the context set here
        # is the one its listeners use.
        limits = _application(self).connection_limits
        self.config.app = self.wsgi
        self.config.http = functools.partial(RatlsHttpToolsProtocol, limits=limits)
        self.config.load()
        self.config.ssl = self.cfg.ssl_context(self.cfg, _no_file_context)
        server = RatlsServer(self.config, handshake_timeout=limits.head_timeout)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class RatlsServer(uvicorn.Server):
    """uvicorn's server on gunicorn's sockets, with a deadline on the TLS handshake (uvicorn
    leaves asyncio's 60 s, during which a client that sends nothing holds a connection)."""

    def __init__(self, config: uvicorn.Config, handshake_timeout: float) -> None:
        super().__init__(config)
        self._handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[Any] | None = None) -> None:
        # uvicorn's startup for the sockets it is given, plus ssl_handshake_timeout.
        if sockets is None:
            raise RuntimeError("the API server listens on the sockets gunicorn passes")
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state,
                _loop=_loop,
            )

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, ssl=config.ssl,
                                     backlog=config.backlog,
                                     ssl_handshake_timeout=self._handshake_timeout)
            for sock in sockets
        ]
        self.started = True


async def _over_capacity(max_connections: int, scope: Scope, receive: Receive,
                         send: Send) -> None:
    """The app of a connection beyond the cap: every request gets 503 and the connection closes."""
    error = ServiceUnavailable(f"this worker holds its limit of {max_connections} connections; "
                               "retry shortly", code="over_capacity")
    await send_error(send, error, [(b"retry-after", b"1"), (b"connection", b"close")])


def _application(worker: UvicornWorker) -> LimitedApplication:
    # gunicorn hands each worker the application object that started it (ApiServer).
    application: LimitedApplication = worker.app
    return application


def _no_file_context() -> ssl.SSLContext:
    raise RuntimeError("the API server's TLS context comes from its ssl_context hook only")
