"""The ASGI app each API worker serves: inference natively on the event loop, the rest in Flask.

The three inference routes are the hot path (every tenant request, streams held open for
minutes): they run as native ASGI on the worker's event loop, with the asyncio engine client.
Every other route (lifecycle, status, attestation, receipts, metrics) is the Flask app of
`appliance.worker.routes`, served through the WSGI bridge: those routes are rare and block on the
supervisor's control socket, so a bounded thread pool suits them. Every error is the OpenAI
envelope of `appliance.worker.api_errors`, as in the Flask app.
"""

from __future__ import annotations

import ssl
import time

from appliance.errors import MethodNotAllowed, MisdirectedRequest, PayloadTooLarge
from appliance.worker.api_errors import as_api_error
from appliance.worker.asgi_http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    send_error,
    tls_connection,
)
from appliance.worker.identity import connection_identity
from appliance.worker.proxy import INFERENCE_ROUTES
from appliance.worker.routes import WorkerServices
from appliance.worker.wsgi_bridge import WsgiBridge

_ALLOW_POST = (b"allow", b"POST")
_CONNECTION_CLOSE = (b"connection", b"close")


class ApplianceAsgi:
    def __init__(self, services: WorkerServices, other_routes: WsgiBridge,
                 max_body_bytes: int) -> None:
        self._services = services
        self._other_routes = other_routes
        self._max_body = max_body_bytes
        self._inference_routes = frozenset(INFERENCE_ROUTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            started = time.perf_counter()
            try:
                require_full_handshake(tls_connection(scope))
                if path in self._inference_routes:
                    await self._inference(path, scope, receive, send, started)
                else:
                    await self._other_routes(scope, receive, send)
            except ClientGone:
                return
            except Exception as exc:  # before the response started (after it, nothing raises)
                route = path if path in self._inference_routes else "unmatched"
                await self._error(route, scope, exc, send, started)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def close(self) -> None:
        self._services.proxy.close()
        self._other_routes.close()

    async def _inference(self, route: str, scope: Scope, receive: Receive, send: Send,
                         started: float) -> None:
        # The order of the checks is the contract: (a resumed session's 421 in __call__) 405, 413,
        # then the body (400, 503, 404), 421.
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} is not allowed on {route}")
        body = await read_body(scope, receive, self._max_body)
        services = self._services
        served = services.state.current()
        identity = connection_identity(tls_connection(scope), services.identity)
        await services.proxy.forward(route, body, served, identity, receive, send, started)

    async def _error(self, route: str, scope: Scope, exc: Exception, send: Send,
                     started: float) -> None:
        error = as_api_error(exc, scope["method"], route)
        headers = []
        if isinstance(error, MethodNotAllowed):
            headers.append(_ALLOW_POST)
        if error.status == 421 or isinstance(error, PayloadTooLarge):
            # 421: the connection attested superseded evidence, or none (a resumed session);
            # dropping it makes a retry (RFC 9110 15.5.20) open a new connection and verify the
            # certificate it presents. 413: the rest of the body is not read. uvicorn closes the
            # connection after this response.
            headers.append(_CONNECTION_CLOSE)
        self._services.metrics.count_request(route, error.status, time.perf_counter() - started)
        await send_error(send, error, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def require_full_handshake(connection: ssl.SSLObject | None) -> None:
    """Refuses (421) every request on a connection that resumed a TLS session.

    A resumed handshake presents no certificate: what the client verified belongs to an earlier
    connection, maybe to an identity (a model) the appliance no longer serves. The server turns
    resumption off (`ratls/tls.py`); this holds even where it could not.
    """
    if connection is not None and connection.session_reused:
        raise MisdirectedRequest(
            "this connection resumed a TLS session, so it presented no certificate to verify; "
            "reconnect with a full handshake", code="tls_session_resumed",
        )
