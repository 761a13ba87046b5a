"""Which key the appliance at a registered URL holds: one TLS handshake, nothing sent.

The handshake proves the server holds the private key of the certificate it presents
(CertificateVerify), so when that key is the key of an attested certificate, the TD that pushed
is the one answering at the registered URL. Nothing about the presented certificate is trusted
beyond its key: the pushed certificate is the one attested.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from typing import Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ratls.tls import client_ssl_context

DEFAULT_TIMEOUT_SECONDS = 10.0


class KeyProbe(Protocol):
    def presented_key_sha256(self, url: str) -> bytes:
        """SHA-256 of the SubjectPublicKeyInfo the server at `url` presents; OSError (and
        ValueError for a certificate that does not parse) when it cannot be had."""
        ...


def spki_sha256(certificate: x509.Certificate) -> bytes:
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


class TlsKeyProbe:
    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout

    def presented_key_sha256(self, url: str) -> bytes:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        with (
            socket.create_connection((host, port), timeout=self._timeout) as raw,
            client_ssl_context().wrap_socket(raw, server_hostname=_sni(host)) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        if not der:
            raise OSError(f"{host}:{port} presented no certificate")
        return spki_sha256(x509.load_der_x509_certificate(der))


def _sni(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None  # no SNI for an address
