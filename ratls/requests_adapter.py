"""A `requests` transport adapter that verifies RA-TLS on every new connection.

The adapter's urllib3 connections run the `ConnectionGate` right after the TLS handshake, inside
`connect()`, so urllib3 sends the request only on admitted connections; a refused server gets
nothing but the handshake, and `AttestationRefused` propagates to the caller unchanged.

Proxies are refused: a proxy-managed pool would not use the attesting connections.
"""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.util.ssltransport import SSLTransport

from ratls.clock import Clock, system_clock
from ratls.connection import ConnectionGate, SocketChannel
from ratls.errors import RatlsError
from ratls.misdirected import send_retrying_misdirected
from ratls.tls import client_ssl_context

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs

    from ratls.verifier import RatlsVerifier


class _AttestedHTTPSConnection(HTTPSConnection):
    gate: ConnectionGate | None = None

    def connect(self) -> None:
        super().connect()
        try:
            if self.gate is None:
                raise RatlsError("connection has no RA-TLS gate", check="gate")
            sock = self.sock
            if not isinstance(sock, (ssl.SSLSocket, SSLTransport)):
                raise RatlsError("connection is not TLS", check="peer_certificate")
            certificate = sock.getpeercert(binary_form=True)
            if not certificate:
                raise RatlsError("server presented no certificate", check="peer_certificate")
            # urllib3 types SSLTransport.recv as int | bytes; called without a buffer it is bytes.
            channel = SocketChannel(sock)  # type: ignore[arg-type]
            self.gate.admit(certificate, host=self.host, port=self.port, channel=channel)
        except BaseException:
            self.close()
            raise
        # Attested, which is stronger than CA verification (so no InsecureRequestWarning).
        self.is_verified = True


class _AttestedPool(HTTPSConnectionPool):
    ConnectionCls = _AttestedHTTPSConnection

    def __init__(self, *args: Any, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    def _new_conn(self) -> _AttestedHTTPSConnection:
        conn = super()._new_conn()
        if not isinstance(conn, _AttestedHTTPSConnection):
            raise AssertionError("pool built a connection of the wrong class")
        conn.gate = self._gate
        return conn


class AttestedAdapter(HTTPAdapter):
    """Mount on `https://` of a `requests.Session`; every new connection passes `gate`."""

    def __init__(self, gate: ConnectionGate, **kwargs: Any) -> None:
        self.gate = gate
        self._ssl_context = client_ssl_context()
        super().__init__(**kwargs)

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        # 421: the server's evidence changed since this connection was verified (e.g. a model was
        # loaded); see ratls.misdirected. A file or generator body may be spent: not replayable.
        return send_retrying_misdirected(
            lambda: super(AttestedAdapter, self).send(request, *args, **kwargs),
            status=lambda response: response.status_code,
            discard=_discard,
            replayable=request.body is None or isinstance(request.body, bytes | str),
        )

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "https": functools.partial(_AttestedPool, gate=self.gate)
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] != "https":
            raise RatlsError(
                "RA-TLS clients send requests over https only",
                check="scheme",
                expected="https",
                actual=host_params["scheme"],
            )
        # The CA settings `verify` would select do not apply: the gate verifies attestation.
        return host_params, {
            "ssl_context": self._ssl_context,
            "cert_reqs": "CERT_NONE",
            # types-requests' _PoolKwargs omits assert_hostname, which urllib3 pools accept.
            "assert_hostname": False,  # type: ignore[typeddict-unknown-key]
        }

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to set: CA verification is replaced by the gate (see the module docstring)."""

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise RatlsError(
            "proxies are not supported by the RA-TLS adapter", check="proxy", actual=proxy
        )


def _discard(response: requests.Response) -> None:
    """Read a 421 and close its connection (reading alone would hand it back to the pool)."""
    connection = response.raw.connection
    _ = response.content
    if connection is not None:
        connection.close()


class _RefusingAdapter(HTTPAdapter):
    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        raise RatlsError(
            "RA-TLS sessions send requests over https only",
            check="scheme",
            expected="https",
            actual="http",
        )


def attested_session(
    verifier: RatlsVerifier,
    *,
    require_nonce: bool = False,
    insecure_skip_hostname_check: bool = False,
    clock: Clock = system_clock,
) -> requests.Session:
    """A `requests.Session` whose https connections are RA-TLS verified; http is refused.

    Environment proxies are ignored (`trust_env=False`), since the adapter refuses proxies.
    """
    gate = ConnectionGate(
        verifier,
        clock=clock,
        require_nonce=require_nonce,
        insecure_skip_hostname_check=insecure_skip_hostname_check,
    )
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", AttestedAdapter(gate))
    session.mount("http://", _RefusingAdapter())
    return session
