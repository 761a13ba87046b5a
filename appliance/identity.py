"""The RA-TLS identity across the control socket: the supervisor's issuer -> each API worker.

The supervisor serializes its current identity (certificate DER and private key PEM) for the
workers; a worker's `SupervisorIdentitySource` fetches it again only when the generation in the
shared state file moves past the one it holds. The key crosses only the 0600 Unix socket.
"""

from __future__ import annotations

import threading
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from appliance.app import StateSource, Supervisor
from ratls.issuer import Identity


def identity_document(identity: Identity) -> dict[str, Any]:
    """The identity for a worker over the private control socket (key included)."""
    return {
        "generation": identity.generation,
        "certificate_der": identity.certificate.der.hex(),
        "private_key_pem": identity.private_key_pem().decode(),
        "tee": identity.tee,
    }


class SupervisorIdentitySource:
    """ratls `IdentitySource` for a worker: the supervisor's identity, re-fetched on a new generation."""

    def __init__(self, state: StateSource, supervisor: Supervisor) -> None:
        self._state = state
        self._supervisor = supervisor
        self._lock = threading.Lock()
        self._identity: Identity | None = None

    def current(self) -> Identity:
        wanted = self._state.current().identity_generation
        identity = self._identity
        # >=: the supervisor may already be a generation ahead of the state file we read.
        if identity is not None and identity.generation >= wanted:
            return identity
        with self._lock:
            if self._identity is None or self._identity.generation < wanted:
                document = self._supervisor.call("GET", "/identity")
                self._identity = Identity.from_parts(
                    generation=int(document["generation"]),
                    private_key=load_pem_private_key(document["private_key_pem"].encode(), None),
                    certificate_der=bytes.fromhex(document["certificate_der"]),
                    tee=document["tee"],
                )
            return self._identity
