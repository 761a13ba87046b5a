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
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from ratls.server import presented_identity

# RFC 8446 / 5246 protocol versions, as the ASGI TLS extension wants them.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# Bounds of a request's head (gunicorn's were 4094 bytes of request line and 100 fields of 8190):
# llhttp bounds neither and uvicorn's httptools protocol keeps the whole head in memory.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100


class HeadTooLarge(Exception):
    """The request line and headers exceed MAX_HEAD_BYTES or MAX_HEADER_FIELDS."""


class RatlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the connection's TLS in `scope["extensions"]` (and its
    writes coalesced per loop turn, see `_CoalescingTransport`).

    `extensions["tls"]` has the ASGI TLS extension's shape; `extensions["ratls"]["ssl_object"]` is
    the `ssl.SSLObject` itself, from which the app reads the presented RA-TLS identity. A request
    head over MAX_HEAD_BYTES or MAX_HEADER_FIELDS is refused (400, connection closed).
    """

    _extensions: dict[str, Any] | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = _CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
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

    def on_message_begin(self) -> None:
        super().on_message_begin()  # builds a fresh self.scope for the request
        self._head_bytes = 0
        if self._extensions is not None:
            self.scope["extensions"] = dict(self._extensions)

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
        "http": RatlsHttpToolsProtocol,
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
        self.config.app = self.wsgi
        self.config.load()
        self.config.ssl = self.cfg.ssl_context(self.cfg, _no_file_context)
        await super()._serve()


def _no_file_context() -> ssl.SSLContext:
    raise RuntimeError("the API server's TLS context comes from its ssl_context hook only")
