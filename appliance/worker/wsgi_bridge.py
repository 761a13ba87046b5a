"""Serves a WSGI app (the Flask app of every route but inference) from the ASGI event loop.

The request body is read in full on the loop, bounded by the body limit (`asgi_http.read_body`,
the worker's one body reader), so the WSGI app never blocks on a client; the app then runs in a
bounded thread pool (its routes block: they call the supervisor over its control socket) and its
whole response is sent back (these routes do not stream). The connection's TLS object goes into
the environ under `TLS_CONNECTION_ENVIRON`.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from appliance.worker.asgi_http import (
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
    tls_connection,
)

TLS_CONNECTION_ENVIRON = "appliance.tls_connection"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Request headers that the environ carries as CONTENT_* or that the body read made moot.
_NOT_IN_ENVIRON = frozenset({b"content-type", b"content-length", b"transfer-encoding"})


class WsgiBridge:
    def __init__(self, app: WsgiApp, threads: int, max_body_bytes: int) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Raises PayloadTooLarge and ClientGone (from reading the body) before any response."""
        body = await read_body(scope, receive, self._max_body)
        environ = wsgi_environ(scope, body)
        loop = asyncio.get_running_loop()
        status, headers, payload = await loop.run_in_executor(self._executor, self._call, environ)
        await send_response(send, status, headers, payload)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        started: list[Any] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return written.append  # PEP 3333's legacy write()

        result = self._app(environ, start_response)
        try:
            written.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        # send_response sets Content-Length from the body it sends.
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                   for name, value in headers if name.lower() != "content-length"]
        return int(status.split(" ", 1)[0]), encoded, b"".join(written)


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """PEP 3333 environ of an ASGI HTTP request whose body has been read in full."""
    server = scope.get("server") or ("localhost", 443)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        # PEP 3333: the decoded path as bytes, each byte one latin-1 character.
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    connection = tls_connection(scope)
    if connection is not None:
        environ[TLS_CONNECTION_ENVIRON] = connection
    for name, value in scope["headers"]:
        if name == b"content-type":
            environ["CONTENT_TYPE"] = value.decode("latin-1")
            continue
        # Like gunicorn: a header with "_" is dropped, so that "X_Token" cannot pose as "X-Token".
        if name in _NOT_IN_ENVIRON or b"_" in name:
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ
