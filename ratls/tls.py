"""TLS settings of both ends of RA-TLS: TLS 1.2+ only, forward-secret AEAD suites, HTTP/1.1."""

from __future__ import annotations

import ssl
from typing import TypeVar

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
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


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
