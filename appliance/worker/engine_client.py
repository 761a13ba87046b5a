"""A lean asyncio HTTP/1.1 client for the engine on 127.0.0.1: the proxy's hot path.

Why not httpx or aiohttp: per request they cost several times the proxy's whole budget (header
objects, pool bookkeeping, abstractions over transports), and what the proxy needs is narrow: one
trusted peer on loopback, JSON request bodies with a length, responses framed by Content-Length
or chunked encoding (uvicorn's SSE), keep-alive, a per-read idle timeout and no total timeout,
and a `close()` that drops the connection so that the engine sees a disconnect and aborts
generation. The response body is returned exactly as the engine sent it (after removing chunk
framing). One client per event loop: its connections belong to the loop that opened them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from appliance.errors import UpstreamError, UpstreamTimeout

_READ_SIZE = 65536
_MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_MAX_IDLE_CONNECTIONS = 256
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"trailer",
     b"upgrade", b"proxy-connection", b"date", b"server"}
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class EngineEndpoint:
    host: str
    port: int
    connect_timeout: float = 5.0
    idle_timeout: float = 600.0
    # A kept-alive connection idle this long is not reused: the engine closes idle connections
    # (vLLM's uvicorn after 5 s), and one it closes just as a request is written fails that
    # request, which is never sent again (see EngineClient.request).
    keepalive_expiry: float = 2.0


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        # The engine closed an idle connection (EOF arrived), or it holds unexpected bytes.
        return not (self.writer.is_closing() or self.reader.at_eof())

    def drop(self) -> None:
        # abort(): no flushing and no waiting; the engine sees the connection go at once.
        self.writer.transport.abort()


class EngineResponse:
    """One response; iterate `chunks()` or await `read()` once, then it is done or `close()`d."""

    def __init__(self, pool: EngineClient, connection: _Connection, status: int,
                 headers: list[tuple[bytes, bytes]], framing: str, length: int,
                 keep_alive: bool) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = status
        self.headers = headers
        self._framing = framing  # "length", "chunked" or "close"
        self._length = length
        self._keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def passthrough_headers(self) -> list[tuple[bytes, bytes]]:
        """End-to-end headers to relay to the client (framing is the proxy server's business)."""
        return [(k, v) for k, v in self.headers if k not in _HOP_BY_HOP]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive: one item per read (Content-Length) or per chunk (chunked)."""
        if self._framing == "length":
            body = self._length_body()
        elif self._framing == "chunked":
            body = self._chunked_body()
        else:
            body = self._until_close()
        async for chunk in body:
            yield chunk
        self._finish()

    def close(self) -> None:
        """Drops the connection if the body was not fully read (the engine then aborts)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.drop()

    def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._keep_alive and connection.usable():
            self._pool.release(connection)
        else:
            connection.drop()

    async def _read(self, operation: Awaitable[_T]) -> _T:
        """One read with the idle timeout; any failure drops the connection."""
        try:
            async with asyncio.timeout(self._pool.endpoint.idle_timeout):
                return await operation
        except TimeoutError as exc:
            self.close()
            raise UpstreamTimeout(
                f"the engine sent nothing for {self._pool.endpoint.idle_timeout:g} s") from exc
        except asyncio.IncompleteReadError as exc:
            self.close()
            raise UpstreamError(
                "the engine closed the connection in the middle of a response") from exc
        except asyncio.LimitOverrunError as exc:
            raise self._protocol_error("chunk size line too long") from exc
        except OSError as exc:
            self.close()
            raise UpstreamError(f"reading from the engine failed: {exc.strerror or exc}") from exc

    def _reader(self) -> asyncio.StreamReader:
        if self._connection is None:  # close()d while the body was being read
            raise UpstreamError("the engine response was closed before its end")
        return self._connection.reader

    async def _length_body(self) -> AsyncIterator[bytes]:
        remaining = self._length
        while remaining > 0:
            data = await self._read(self._reader().read(min(remaining, _READ_SIZE)))
            if not data:
                self.close()
                raise UpstreamError("the engine closed the connection in the middle of a response")
            remaining -= len(data)
            yield data

    async def _chunked_body(self) -> AsyncIterator[bytes]:
        # RFC 9112 7.1: chunk-size [; ext] CRLF, data CRLF, ..., 0 CRLF, trailer lines, CRLF.
        while True:
            line = await self._read(self._reader().readuntil(b"\r\n"))
            if len(line) > _MAX_CHUNK_LINE:
                raise self._protocol_error("chunk size line too long")
            size_text = line[:-2].split(b";", 1)[0].strip()
            # 1*HEXDIG only: int(_, 16) would also take "0x10", "1_0" and "-1".
            if not size_text or size_text.strip(_HEX_DIGITS):
                raise self._protocol_error(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await self._read(self._reader().readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields: not relayed
                return
            data = await self._read(self._reader().readexactly(size + 2))
            if data[-2:] != b"\r\n":
                raise self._protocol_error("chunk data not followed by CRLF")
            yield data[:-2]

    async def _until_close(self) -> AsyncIterator[bytes]:
        self._keep_alive = False
        while data := await self._read(self._reader().read(_READ_SIZE)):
            yield data

    def _protocol_error(self, what: str) -> UpstreamError:
        self.close()
        return UpstreamError(f"the engine broke HTTP/1.1 framing: {what}")


class EngineClient:
    """Keep-alive connections to one engine endpoint, shared by the requests of one event loop."""

    def __init__(self, endpoint: EngineEndpoint,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._idle: list[_Connection] = []
        self._host_header = f"{endpoint.host}:{endpoint.port}".encode()

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: bytes = b"application/json") -> EngineResponse:
        """Sends the request once; raises UpstreamError / UpstreamTimeout.

        A request is sent again only when not one byte of it left: the write to a kept-alive
        connection was refused (the engine had reset it). Once a byte may have reached the engine,
        a close without an answer is an UpstreamError: the engine may have read the request and
        started generating, and a second send could run it twice.
        """
        message = b"".join((
            method.encode(), b" ", path.encode(), b" HTTP/1.1\r\nHost: ", self._host_header,
            b"\r\nContent-Type: ", content_type,
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
        ))
        connection, reused = await self._acquire()
        if not _written(connection, message):
            connection.drop()
            if not reused:
                raise UpstreamError("the engine closed a new connection before the request was "
                                    "sent")
            connection = await self._connect()
            if not _written(connection, message):
                connection.drop()
                raise UpstreamError("the engine closed a new connection before the request was "
                                    "sent")
        return await self._response(connection)

    def release(self, connection: _Connection) -> None:
        if len(self._idle) < _MAX_IDLE_CONNECTIONS:
            connection.idle_since = self._clock()
            self._idle.append(connection)
        else:
            connection.drop()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.drop()

    async def _acquire(self) -> tuple[_Connection, bool]:
        oldest = self._clock() - self.endpoint.keepalive_expiry
        while self._idle:
            connection = self._idle.pop()
            if connection.usable() and connection.idle_since > oldest:
                return connection, True
            connection.drop()
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, limit=_MAX_HEAD_BYTES)
        except TimeoutError as exc:
            raise UpstreamError(f"cannot connect to the engine at {endpoint.host}:{endpoint.port}: "
                                f"no answer in {endpoint.connect_timeout:g} s") from exc
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the engine at {endpoint.host}:{endpoint.port}: "
                                f"{exc.strerror or exc}") from exc
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    async def _response(self, connection: _Connection) -> EngineResponse:
        """The response to the request just written on `connection`."""
        try:
            async with asyncio.timeout(self.endpoint.idle_timeout):
                head = await connection.reader.readuntil(b"\r\n\r\n")
        except TimeoutError as exc:
            connection.drop()
            raise UpstreamTimeout(
                f"the engine sent nothing for {self.endpoint.idle_timeout:g} s") from exc
        except asyncio.IncompleteReadError as exc:
            connection.drop()
            if not exc.partial:
                raise _unanswered() from exc
            raise UpstreamError("the engine closed the connection inside response headers") from exc
        except asyncio.LimitOverrunError as exc:
            connection.drop()
            raise UpstreamError("the engine's response headers are too large") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            connection.drop()
            raise _unanswered() from exc
        except OSError as exc:
            connection.drop()
            raise UpstreamError(f"talking to the engine failed: {exc.strerror or exc}") from exc
        except asyncio.CancelledError:
            connection.drop()  # the client went: the engine must see it too
            raise
        try:
            status, headers, keep_alive = _parse_head(head[:-4])
            framing, length = _framing(status, headers)
        except UpstreamError:
            connection.drop()
            raise
        return EngineResponse(self, connection, status, headers, framing, length, keep_alive)


def _written(connection: _Connection, message: bytes) -> bool:
    """Writes `message`; False when the transport refused it before any byte left.

    asyncio's and uvloop's transports try the first send() at once and fail on its error, closing
    themselves: closing right after write() means nothing was sent. Once a byte was accepted the
    rest is buffered and a later failure closes the transport afterwards.
    """
    connection.writer.write(message)
    return not connection.writer.transport.is_closing()


def _unanswered() -> UpstreamError:
    return UpstreamError("the engine closed the connection without answering (the request may "
                         "have reached it, so it is not sent again)")


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    # A status outside 100..599 is refused: it is relayed to the client and signed in receipts.
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isdigit() or not 100 <= int(parts[1]) <= 599):
        raise UpstreamError(f"the engine sent a malformed status line {lines[0][:40]!r}")
    keep_alive = parts[0] == b"HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise UpstreamError("the engine sent a malformed header line")
        name = name.strip().lower()
        value = value.strip()
        if name == b"connection":
            keep_alive = value.lower() != b"close"
        headers.append((name, value))
    return int(parts[1]), headers, keep_alive


def _framing(status: int, headers: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    """How the body ends (RFC 9112 6.3): ("length", n), ("chunked", 0) or ("close", 0)."""
    if status in (204, 304) or 100 <= status < 200:
        return "length", 0
    framing, length = "close", 0
    for key, value in headers:
        if key == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise UpstreamError(f"the engine used transfer-encoding {value[:20]!r}")
            framing = "chunked"
        elif key == b"content-length" and framing != "chunked":
            if not value.strip().isdigit():
                raise UpstreamError("the engine sent a malformed Content-Length")
            framing, length = "length", int(value)
    return framing, length
