"""A worker's RA-TLS identity: the supervisor's, fetched again only when its generation moves;
and which identity a request's connection presented.

The supervisor publishes the identity's generation in the shared state file; a worker's
`SupervisorIdentitySource` fetches the certificate and key over the control socket only when that
generation moves past the one it holds. A connection keeps the identity of its handshake across a
rotation: `connection_identity` is that one, which receipts sign with and attestation binds.
"""

from __future__ import annotations

import ssl
import threading
from typing import TYPE_CHECKING

from appliance.channel.identity import identity_from_document
from ratls.issuer import Identity, IdentitySource
from ratls.server import presented_identity

if TYPE_CHECKING:  # at run time, routes imports this module
    from appliance.worker.routes import ControlChannel, StateSource


class SupervisorIdentitySource:
    """ratls `IdentitySource` for a worker.

    The supervisor's identity, re-fetched on a new generation.
    """

    def __init__(self, state: StateSource, supervisor: ControlChannel) -> None:
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
                self._identity = identity_from_document(self._supervisor.call("GET", "/identity"))
            return self._identity


def connection_identity(connection: ssl.SSLObject | None, source: IdentitySource) -> Identity:
    """The identity a request's TLS connection presented; `source`'s current one without TLS
    (in-process tests). The connection: `asgi_http.tls_connection(scope)` on the event loop,
    `environ[wsgi_bridge.TLS_CONNECTION_ENVIRON]` in the Flask app."""
    if connection is None:
        return source.current()
    return presented_identity(connection)
