"""Server TLS context that always presents the newest RA-TLS identity, without a restart.

`RotatingServerContext.context()` returns the `SSLContext` of the current identity generation
(rebuilt only when the generation changes). Every context it builds also has an SNI callback,
which OpenSSL runs on every ClientHello (with or without SNI), that swaps in the newest context:
so a long-lived context (asyncio workers) serves new certificates too, and gunicorn's sync and
gthread workers, which call the `ssl_context` hook per connection, get the current one directly.

If the identity source fails, the handshake is aborted: a server that cannot say which model it
serves must not present an older certificate that says another.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

from ratls.errors import IdentityUnavailableError
from ratls.issuer import Identity, IdentitySource

log = logging.getLogger(__name__)

# TLS 1.2 suites: forward-secret ECDHE with AEAD only (TLS 1.3 suites are all acceptable).
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
)
ALPN_PROTOCOLS = ["http/1.1"]

GunicornHook = Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def build_server_context(identity: Identity) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting `identity`'s certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    _load_identity(context, identity)
    return context


def _load_identity(context: ssl.SSLContext, identity: Identity) -> None:
    # Python's ssl loads keys only from a path. An anonymous memory file (memfd, never on disk,
    # closed right away) keeps the key off every filesystem.
    pem = identity.certificate.pem().encode("ascii") + identity.private_key_pem()
    fd = os.memfd_create("ratls-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class RotatingServerContext:
    """The server side of RA-TLS: `context()` for new listeners, `gunicorn_hook` for gunicorn."""

    def __init__(self, source: IdentitySource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """The context of the current identity generation. Raises IdentityUnavailableError."""
        try:
            identity = self._source.current()
        except Exception as exc:
            raise IdentityUnavailableError(
                f"identity source failed: {exc}", check="current"
            ) from exc
        with self._lock:
            if self._context is None or identity.generation != self._generation:
                context = build_server_context(identity)
                context.sni_callback = self._on_client_hello
                self._context, self._generation = context, identity.generation
                log.info(
                    "serving RA-TLS generation %d (certificate sha256 %s)",
                    identity.generation,
                    identity.fingerprint.hex(),
                )
            return self._context

    def gunicorn_hook(
        self, config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """gunicorn's `ssl_context(config, default_ssl_context_factory)` server hook.

        gunicorn enables TLS only when `certfile` is set and checks that it exists, but this hook
        never calls the default factory, so nothing is read from it: set `certfile = "/dev/null"`.
        """
        return self.context()

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        try:
            current = self.context()
        except IdentityUnavailableError:
            log.exception("aborting a TLS handshake: no RA-TLS identity")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if current is not context:
            ssl_object.context = current
        return None
