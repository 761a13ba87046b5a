"""The local control channel: HTTP/1.1 over a Unix socket from the API workers to the supervisor.

Only the rare operations cross it (lifecycle requests, status, nonce evidence, collateral, and the
identity when its generation changes); the proxy's hot path never does. The socket lives in a
0700 directory and is itself 0600, so only the service's own user can reach it; and each
connection's peer, as the kernel saw it (SO_PEERCRED), must pass `admit` (the supervisor admits
its API server's processes only) before a byte of it is read.
Errors cross as the OpenAI envelope with their HTTP status, so workers relay them unchanged.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from appliance.channel.peer import PeerCredentials, peer_credentials
from appliance.errors import ApiError, BadRequest, ControlChannelError, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

_MAX_CONTROL_BODY = 64 * 1024


@dataclass(frozen=True)
class ControlRequest:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]


# A route answers (status, JSON document) or raises ApiError.
Route = Callable[[ControlRequest], tuple[int, Any]]
# Why a peer may not use the socket, or None when it may.
PeerCheck = Callable[[PeerCredentials], str | None]


class ControlServer:
    """Serves `routes` (keyed by (method, path)) on a Unix socket, one thread per connection."""

    def __init__(
        self, socket_path: Path, routes: dict[tuple[str, str], Route], *, admit: PeerCheck
    ) -> None:
        self.socket_path = socket_path
        self._routes = routes
        handler = _make_handler(routes)
        socket_path.unlink(missing_ok=True)
        # The umask makes the socket 0600 from birth: no window in which it is reachable by others.
        old_umask = os.umask(0o177)
        try:
            self._server = _UnixHTTPServer(str(socket_path), handler)
        finally:
            os.umask(old_umask)
        self._server.admit = admit
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    admit: PeerCheck

    def verify_request(self, request: Any, client_address: Any) -> bool:
        try:
            peer = peer_credentials(request)
        except OSError:
            log.warning("control socket: refused a peer whose credentials cannot be read")
            return False
        refusal = self.admit(peer)
        if refusal is not None:
            log.warning("control socket: refused pid %d uid %d: %s", peer.pid, peer.uid, refusal)
            return False
        return True


def _make_handler(routes: dict[tuple[str, str], Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            try:
                route = routes.get((method, url.path))
                if route is None:
                    raise NotFound(f"no control route {method} {url.path}")
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                status, document = route(
                    ControlRequest(method, url.path, query, self._json_body())
                )
                payload = json.dumps(document).encode()
            except ApiError as error:
                status, payload = error.status, error.body()
            except Exception:
                log.exception("control route %s %s failed", method, url.path)
                status, payload = 500, ApiError("the supervisor failed to answer").body()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json_body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_CONTROL_BODY:
                raise BadRequest("control request too large")
            if not length:
                return {}
            try:
                document = json.loads(self.rfile.read(length))
            except ValueError:
                raise BadRequest("control request body is not JSON") from None
            if not isinstance(document, dict):
                raise BadRequest("control request body must be a JSON object")
            return document

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

    return Handler


class ControlClient:
    """The worker side. One short connection per call: calls are rare and this keeps it simple."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of a 2xx; ApiError (rebuilt from the envelope) otherwise."""
        connection = _UnixHTTPConnection(self._socket_path, self._timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            status, data = response.status, response.read()
        except OSError as exc:
            raise ServiceUnavailable(
                "the supervisor is not answering on its control socket",
                code="supervisor_unavailable",
            ) from exc
        finally:
            connection.close()
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ControlChannelError(f"unreadable control answer (status {status})") from exc
        if 200 <= status < 300:
            return document
        raise ApiError.from_envelope(status, document)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("supervisor", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock
