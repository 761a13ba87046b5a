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
from ratls.tls import server_ssl_context

log = logging.getLogger(__name__)


class IdentityContext(ssl.SSLContext):
    """A server context that remembers the identity it presents."""

    identity: Identity


def build_server_context(identity: Identity) -> IdentityContext:
    """A TLS 1.2+ server context presenting `identity`'s certificate and key."""
    context = server_ssl_context(IdentityContext)
    context.identity = identity
    _load_identity(context, identity)
    return context


def presented_identity(connection: ssl.SSLSocket | ssl.SSLObject) -> Identity:
    """The identity a server connection presented in its handshake (under rotation, the one
    `/v1/attestation` must bind): `environ["gunicorn.socket"]` under gunicorn's sync and gthread
    workers, `transport.get_extra_info("ssl_object")` under asyncio (the appliance's workers).
    """
    context = connection.context
    if not isinstance(context, IdentityContext):
        raise IdentityUnavailableError(
            "connection was not set up by RotatingServerContext", check="context"
        )
    return context.identity


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
        self._context: IdentityContext | None = None

    def context(self) -> IdentityContext:
        """The context of the current identity generation. Raises IdentityUnavailableError."""
        try:
            identity = self._source.current()
        except Exception as exc:
            raise IdentityUnavailableError(
                f"identity source failed: {exc}", check="current"
            ) from exc
        with self._lock:
            if self._context is None or identity.generation != self._context.identity.generation:
                context = build_server_context(identity)
                context.sni_callback = self._on_client_hello
                self._context = context
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
