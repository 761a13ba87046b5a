"""The RA-TLS identity as it crosses the control socket, from the supervisor to each API worker.

The document carries the certificate DER and the private key PEM; it crosses only the 0600 Unix
socket, never the network.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ratls.errors import IssuanceError
from ratls.issuer import Identity


def identity_document(identity: Identity) -> dict[str, Any]:
    """The identity for a worker over the private control socket (key included)."""
    return {
        "generation": identity.generation,
        "certificate_der": identity.certificate.der.hex(),
        "private_key_pem": identity.private_key_pem().decode(),
        "tee": identity.tee,
    }


def identity_from_document(document: dict[str, Any]) -> Identity:
    """The inverse of `identity_document`."""
    private_key = load_pem_private_key(document["private_key_pem"].encode(), None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        # An RA-TLS identity key is always EC; any other key cannot match the certificate.
        raise IssuanceError("private key does not match the certificate", check="key_match")
    return Identity.from_parts(
        generation=int(document["generation"]),
        private_key=private_key,
        certificate_der=bytes.fromhex(document["certificate_der"]),
        tee=document["tee"],
    )
