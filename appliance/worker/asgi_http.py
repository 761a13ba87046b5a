"""ASGI plumbing shared by the native inference handler and the WSGI bridge: the bounded request
body, the connection's TLS, and whole responses (error envelopes included).

The HTTP parsing itself is uvicorn's (llhttp via httptools); this module only consumes ASGI
messages. The connection's TLS object reaches a request through the scope extension that
`appliance.worker.uvicorn_worker.RatlsHttpToolsProtocol` adds.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from appliance.errors import ApiError, BadRequest, PayloadTooLarge
from appliance.worker.api_errors import ERROR_CONTENT_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ERROR_CONTENT_TYPE = (b"content-type", ERROR_CONTENT_TYPE.encode())


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, at most `limit` bytes. Raises PayloadTooLarge, ClientGone.

    The worker's one body reader: the inference handler reads with it, and so does the WSGI
    bridge for every route of the Flask app (which then gets the body already bounded).
    """
    # 1. A declared length over the limit is refused from the headers alone, before any read.
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():  # llhttp refuses these already; never trust that silently
                raise BadRequest("malformed Content-Length", code="invalid_request")
            if int(value) > limit:
                raise PayloadTooLarge(
                    f"the request body is {int(value)} bytes; the limit is {limit}")
    # 2. A chunked body is stopped as soon as it passes the limit.
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def tls_connection(scope: Scope) -> ssl.SSLObject | None:
    """The TLS object of the request's connection; None without TLS (in-process tests)."""
    ratls = scope.get("extensions", {}).get("ratls")
    return None if ratls is None else ratls["ssl_object"]


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                        body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ApiError,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The OpenAI error envelope with the error's status."""
    await send_response(send, error.status, [_ERROR_CONTENT_TYPE, *(headers or [])], error.body())
