"""TLS settings of both ends of RA-TLS: TLS 1.2+ only, forward-secret AEAD suites, HTTP/1.1,
and no session resumption.

Why no resumption: a resumed handshake sends no certificate, so the client's verification of
the certificate (its quote, its model digest) is the one it made on an earlier connection, while
the server, after a model load, answers with a newer identity. Tickets are off in both TLS
versions, the server's session-ID cache is off, and the service still answers 421 on any
connection that reports `session_reused` (belt and braces: a server that cannot turn the cache
off stays correct, just slower for clients that try).
"""

from __future__ import annotations

import ctypes
import logging
import ssl
from typing import TypeVar

log = logging.getLogger(__name__)

ContextT = TypeVar("ContextT", bound=ssl.SSLContext)

# TLS 1.2 suites: ECDHE (the key is P-256) with AEAD only. TLS 1.3 suites are all acceptable.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
)
ALPN_PROTOCOLS = ["http/1.1"]


def server_ssl_context(cls: type[ContextT] = ssl.SSLContext) -> ContextT:  # type: ignore[assignment]
    """A server context (of `cls`) with the RA-TLS settings and no certificate yet."""
    context = cls(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_NO_TICKET
    )
    context.num_tickets = 0  # TLS 1.3: no session tickets, so nothing to resume with
    if not turn_off_session_cache(context):
        log.warning(
            "cannot turn off the TLS session-ID cache here; resumed connections get 421"
        )
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


# OpenSSL's SSL_CTX_ctrl commands (ssl.h) and the cache mode that stores nothing.
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_OFF = 0


def turn_off_session_cache(context: ssl.SSLContext) -> bool:
    """Turn off the server's TLS 1.2 session-ID cache; False if this interpreter does not allow it.

    Python's ssl module does not expose SSL_CTX_set_session_cache_mode, so this calls it on the
    context's SSL_CTX through the OpenSSL that `_ssl` is linked against. CPython's context object
    is `{PyObject_HEAD; SSL_CTX *ctx; ...}`; the pointer read there is used only after OpenSSL
    reports the same options for it as Python does for the context.
    """
    try:
        import _ssl

        library = ctypes.CDLL(_ssl.__file__)
        get_options = library.SSL_CTX_get_options
        control = library.SSL_CTX_ctrl
    except (ImportError, OSError, AttributeError):
        return False
    get_options.argtypes, get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
    control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    control.restype = ctypes.c_long
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != int(context.options):
        return False
    control(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    mode: int = control(pointer, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None)
    return mode == _SSL_SESS_CACHE_OFF


def client_ssl_context() -> ssl.SSLContext:
    """A client context for RA-TLS connections.

    CA and host-name checks are off because the leaf is self-signed by design: the connection
    gate verifies the certificate (quote, binding, SANs) after the handshake and before any
    request byte. The handshake itself still proves that the server holds the certificate's key
    (CertificateVerify is checked whatever verify_mode says).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context
