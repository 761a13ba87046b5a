"""A lean HTTP/1.1 client for the engine on 127.0.0.1: the proxy's hot path.

Why not httpx or http.client: per request they cost several times the proxy's whole budget
(header objects, email parsing, pool bookkeeping), and what the proxy needs is narrow: one trusted
peer on loopback, JSON request bodies with a length, responses framed by Content-Length or chunked
encoding (uvicorn's SSE), keep-alive, a per-read idle timeout and no total timeout, and a
`close()` that drops the connection so that the engine sees a disconnect and aborts generation.
The response body is returned exactly as the engine sent it (after removing chunk framing).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.errors import UpstreamError, UpstreamTimeout

_RECV_SIZE = 65536
_MAX_HEAD_BYTES = 64 * 1024
_MAX_IDLE_CONNECTIONS = 256
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"trailer",
     b"upgrade", b"proxy-connection", b"date", b"server"}
)


@dataclass(frozen=True)
class EngineEndpoint:
    host: str
    port: int
    connect_timeout: float = 5.0
    idle_timeout: float = 600.0


class EngineResponse:
    """One response; iterate `chunks()` or call `read()` once, then it is done or `close()`d."""

    def __init__(self, pool: EngineClient, sock: socket.socket, status: int,
                 headers: list[tuple[bytes, bytes]], buffered: bytearray, framing: str,
                 length: int, keep_alive: bool) -> None:
        self._pool = pool
        self._sock: socket.socket | None = sock
        self.status = status
        self.headers = headers
        self._buffer = buffered
        self._framing = framing  # "length", "chunked" or "close"
        self._remaining = length
        self._keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def passthrough_headers(self) -> list[tuple[str, str]]:
        """End-to-end headers to relay to the client (framing is the proxy server's business)."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers if k not in _HOP_BY_HOP]

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive: each item holds whatever complete data one read produced."""
        if self._framing == "length":
            yield from self._length_body()
        elif self._framing == "chunked":
            yield from self._chunked_body()
        else:
            yield from self._until_close()
        self._finish()

    def close(self) -> None:
        """Drops the connection if the body was not fully read (the engine then aborts)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            _close(sock)

    def _finish(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._keep_alive and not self._buffer:
            self._pool.release(sock)
        else:
            _close(sock)

    def _recv(self) -> bytes:
        assert self._sock is not None, "response already closed"
        try:
            data = self._sock.recv(_RECV_SIZE)
        except TimeoutError as exc:
            self.close()
            raise UpstreamTimeout(f"the engine sent nothing for {self._pool.endpoint.idle_timeout:g} s") from exc
        except OSError as exc:
            self.close()
            raise UpstreamError(f"reading from the engine failed: {exc.strerror or exc}") from exc
        return data

    def _length_body(self) -> Iterator[bytes]:
        remaining = self._remaining
        if self._buffer:
            data = bytes(self._buffer[:remaining])
            del self._buffer[:remaining]
            remaining -= len(data)
            yield data
        while remaining > 0:
            data = self._recv()
            if not data:
                self.close()
                raise UpstreamError("the engine closed the connection in the middle of a response")
            if len(data) > remaining:
                self._buffer += data[remaining:]
                data = data[:remaining]
            remaining -= len(data)
            yield data

    def _chunked_body(self) -> Iterator[bytes]:
        buffer = self._buffer
        while True:
            out = []
            # Parse every complete chunk in the buffer; yield their data together.
            while True:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    if len(buffer) > 1024:
                        raise self._protocol_error("chunk size line too long")
                    break
                size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise self._protocol_error(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    trailer_end = buffer.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        break  # need the (empty) trailer section
                    del buffer[: trailer_end + 4]
                    if out:
                        yield b"".join(out)
                    return
                end = line_end + 2 + size
                if len(buffer) < end + 2:
                    break
                if buffer[end:end + 2] != b"\r\n":
                    raise self._protocol_error("chunk data not followed by CRLF")
                out.append(bytes(buffer[line_end + 2:end]))
                del buffer[: end + 2]
            if out:
                yield b"".join(out)
            data = self._recv()
            if not data:
                self.close()
                raise UpstreamError("the engine closed the connection in the middle of a stream")
            buffer += data

    def _until_close(self) -> Iterator[bytes]:
        self._keep_alive = False
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        while data := self._recv():
            yield data

    def _protocol_error(self, what: str) -> UpstreamError:
        self.close()
        return UpstreamError(f"the engine broke HTTP/1.1 framing: {what}")


class EngineClient:
    """Keep-alive connections to one engine endpoint, shared by the worker's threads."""

    def __init__(self, endpoint: EngineEndpoint) -> None:
        self.endpoint = endpoint
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._host_header = f"{endpoint.host}:{endpoint.port}".encode()

    def request(self, method: str, path: str, body: bytes = b"",
                content_type: bytes = b"application/json") -> EngineResponse:
        head = b"".join((
            method.encode(), b" ", path.encode(), b" HTTP/1.1\r\nHost: ", self._host_header,
            b"\r\nContent-Type: ", content_type,
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n",
        ))
        message = head + body
        sock, reused = self._acquire()
        try:
            return self._exchange(sock, message)
        except _StaleConnection:
            # A kept-alive connection the engine had closed; nothing reached it, so retrying once
            # on a fresh connection cannot duplicate the request.
            if not reused:
                raise UpstreamError("the engine closed a new connection without answering") from None
            return self._exchange(self._connect(), message)

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE_CONNECTIONS:
                self._idle.append(sock)
                return
        _close(sock)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            _close(sock)

    def _acquire(self) -> tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return self._connect(), False
            # An idle connection that is readable has been closed by the engine (or holds junk).
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return sock, True
            _close(sock)

    def _connect(self) -> socket.socket:
        endpoint = self.endpoint
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.connect_timeout)
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to the engine at {endpoint.host}:{endpoint.port}: {exc.strerror or exc}"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(endpoint.idle_timeout)
        return sock

    def _exchange(self, sock: socket.socket, message: bytes) -> EngineResponse:
        try:
            sock.sendall(message)
            buffer = bytearray()
            while (head_end := buffer.find(b"\r\n\r\n")) < 0:
                data = sock.recv(_RECV_SIZE)
                if not data:
                    _close(sock)
                    if not buffer:
                        raise _StaleConnection
                    raise UpstreamError("the engine closed the connection inside response headers")
                buffer += data
                if len(buffer) > _MAX_HEAD_BYTES:
                    _close(sock)
                    raise UpstreamError("the engine's response headers are too large")
        except TimeoutError as exc:
            _close(sock)
            raise UpstreamTimeout(f"the engine sent nothing for {self.endpoint.idle_timeout:g} s") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            _close(sock)
            raise _StaleConnection from exc
        except OSError as exc:
            _close(sock)
            raise UpstreamError(f"talking to the engine failed: {exc.strerror or exc}") from exc
        status, headers, keep_alive = _parse_head(bytes(buffer[:head_end]), sock)
        del buffer[: head_end + 4]
        framing, length = "close", 0
        for key, value in headers:
            if key == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    _close(sock)
                    raise UpstreamError(f"the engine used transfer-encoding {value[:20]!r}")
                framing = "chunked"
            elif key == b"content-length" and framing != "chunked":
                if not value.strip().isdigit():
                    _close(sock)
                    raise UpstreamError("the engine sent a malformed Content-Length")
                framing, length = "length", int(value)
        if status in (204, 304) or 100 <= status < 200:
            framing, length = "length", 0
        return EngineResponse(self, sock, status, headers, buffer, framing, length, keep_alive)


class _StaleConnection(Exception):
    pass


def _parse_head(head: bytes, sock: socket.socket) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    # A status outside 100..599 is refused: it is relayed to the client and signed in receipts.
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isdigit() or not 100 <= int(parts[1]) <= 599):
        _close(sock)
        raise UpstreamError(f"the engine sent a malformed status line {lines[0][:40]!r}")
    keep_alive = parts[0] == b"HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            _close(sock)
            raise UpstreamError("the engine sent a malformed header line")
        name = name.strip().lower()
        value = value.strip()
        if name == b"connection":
            keep_alive = value.lower() != b"close"
        headers.append((name, value))
    return int(parts[1]), headers, keep_alive


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
