"""A worker's RA-TLS identity: the supervisor's, fetched again only when its generation moves.

The supervisor publishes the identity's generation in the shared state file; a worker's
`SupervisorIdentitySource` fetches the certificate and key over the control socket only when that
generation moves past the one it holds.
"""

from __future__ import annotations

import threading

from appliance.channel.identity import identity_from_document
from appliance.worker.routes import ControlChannel, StateSource
from ratls.issuer import Identity


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
