"""The asyncio engine client against a scripted raw TCP server: exact bytes, split reads, bad
framing, timeouts, and a close() the engine sees."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from appliance.errors import UpstreamError, UpstreamTimeout
from appliance.worker.engine_client import EngineClient, EngineEndpoint

Script = Callable[[socket.socket, bytes], None]

pytestmark = pytest.mark.anyio


class ScriptedServer:
    """Accepts connections; for each request calls the script with (conn, raw request)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self.client_closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.client_closed.set()
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                try:
                    self.script(conn, request)
                except OSError:
                    self.client_closed.set()
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve():
    servers = []

    def start(script: Script) -> tuple[ScriptedServer, EngineClient]:
        server = ScriptedServer(script)
        servers.append(server)
        return server, EngineClient(EngineEndpoint("127.0.0.1", server.port, idle_timeout=0.5))

    yield start
    for server in servers:
        server.close()


def json_response(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


async def test_request_bytes_are_exact_and_body_is_returned_unchanged(serve) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9"}]}  '
    answer = b'{"id":"x",  "choices":[]}\n'
    server, client = serve(lambda conn, req: conn.sendall(json_response(answer)))
    response = await client.request("POST", "/v1/chat/completions", body)
    assert response.status == 200
    assert response.header(b"content-type") == b"application/json"
    assert await response.read() == answer
    assert server.requests[0].endswith(b"\r\n\r\n" + body)
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Content-Length: %d\r\n" % len(body) in server.requests[0]


async def test_keep_alive_reuses_one_connection(serve) -> None:
    server, client = serve(lambda conn, req: conn.sendall(json_response(b"{}")))
    for _ in range(5):
        assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
    assert server.connections == 1


async def test_chunked_body_is_yielded_as_it_arrives_with_framing_removed(serve) -> None:
    release = threading.Event()

    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        conn.sendall(b"b\r\ndata: one\n\n\r\n")
        release.wait(0.4)
        # A chunk split across two TCP writes, then a chunk extension and the terminator.
        conn.sendall(b"b\r\ndata: t")
        time.sleep(0.05)
        conn.sendall(b"wo\n\n\r\n6;ext=1\r\n[DONE]\r\n0\r\n\r\n")

    _, client = serve(script)
    response = await client.request("POST", "/v1/completions", b"{}")
    chunks = response.chunks()
    assert await anext(chunks) == b"data: one\n\n"  # before the server sends the rest
    release.set()
    assert [chunk async for chunk in chunks] == [b"data: two\n\n", b"[DONE]"]


async def test_chunks_in_one_segment_and_trailers_then_the_connection_is_reused(serve) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\nx-trailer: 1\r\n\r\n")

    server, client = serve(script)
    for _ in range(2):
        response = await client.request("POST", "/x", b"{}")
        assert [chunk async for chunk in response.chunks()] == [b"a", b"bc", b"def"]
    assert server.connections == 1


async def test_a_closed_response_drops_the_connection_so_the_engine_sees_it(serve) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        while conn.recv(1):  # until the client goes away
            pass
        raise OSError("client closed")

    server, client = serve(script)
    response = await client.request("POST", "/v1/completions", b"{}")
    assert await anext(response.chunks()) == b"hello"
    response.close()
    # abort() closes the socket on the loop's next turn: wait without blocking the loop.
    assert await asyncio.to_thread(server.client_closed.wait, 5)


async def test_stale_kept_alive_connection_is_replaced_transparently(serve) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(json_response(b"{}", b"connection: keep-alive\r\n"))
        conn.shutdown(socket.SHUT_RDWR)  # the engine closes the idle connection afterwards
        raise OSError("closed")

    server, client = serve(script)
    assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
    await asyncio.sleep(0.1)  # the engine's FIN reaches the idle connection
    assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
    assert server.connections == 2


async def test_a_request_the_engine_read_is_never_sent_again(serve) -> None:
    # The engine reads the second request on the kept-alive connection, then closes it without a
    # byte (it crashed, or was killed, mid-request). It may have started generating: sending the
    # request again could run it twice. A clean UpstreamError (502), once.
    answered = []

    def script(conn: socket.socket, req: bytes) -> None:
        if not answered:
            answered.append(req)
            conn.sendall(json_response(b"{}", b"connection: keep-alive\r\n"))
            return
        raise OSError("engine gone")  # closes without a byte

    server, client = serve(script)
    assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
    with pytest.raises(UpstreamError, match="closed the connection without answering"):
        await client.request("POST", "/x", b'{"n": 2}')
    assert server.requests[1:] == [server.requests[1]] and server.requests[1].endswith(b'{"n": 2}')
    assert server.connections == 1


async def test_a_request_the_idle_connection_refused_is_sent_on_a_new_one(serve) -> None:
    # The engine resets the kept-alive connection after answering; the loop is kept from seeing it
    # (blocked), so the next request is written to the dead socket, which refuses its first byte:
    # nothing reached the engine, and the request goes out once on a new connection.
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(json_response(b"{}", b"connection: keep-alive\r\n"))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise OSError("reset")  # closing with a zero linger sends RST

    server, client = serve(script)
    assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
    time.sleep(0.2)  # the RST arrives while the loop is blocked
    assert await (await client.request("POST", "/x", b'{"n": 2}')).read() == b"{}"
    assert len(server.requests) == 2 and server.requests[1].endswith(b'{"n": 2}')
    assert server.connections == 2


async def test_a_connection_idle_past_the_expiry_is_not_reused(serve) -> None:
    server = ScriptedServer(lambda conn, req: conn.sendall(json_response(b"{}")))
    try:
        client = EngineClient(EngineEndpoint("127.0.0.1", server.port, keepalive_expiry=0.2))
        for pause in (0, 0.05, 0.3):
            await asyncio.sleep(pause)
            assert await (await client.request("POST", "/x", b"{}")).read() == b"{}"
        assert server.connections == 2  # reused after 0.05 s, not after 0.3 s
    finally:
        server.close()


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x2\r\nab\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1_0\r\nab\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-2\r\nab\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "transfer-encoding"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "Content-Length"),
    (b"SPDY/9 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 600 Odd\r\ncontent-length: 0\r\n\r\n", "status line"),
    (b"HTTP/1.1 0200 OK\r\ncontent-length: 0\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "middle of a response"),
])
async def test_broken_framing_is_an_upstream_error(serve, reply: bytes, match: str) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)

    _, client = serve(script)
    with pytest.raises(UpstreamError, match=match):
        await (await client.request("POST", "/x", b"{}")).read()


async def test_idle_engine_times_out_per_read_not_per_request(serve) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(4):  # 4 x 0.3 s > the 0.5 s idle timeout, but no gap reaches it
            time.sleep(0.3)
            conn.sendall(b"1\r\nx\r\n")
        conn.sendall(b"0\r\n\r\n")

    _, client = serve(script)
    assert await (await client.request("POST", "/x", b"{}")).read() == b"xxxx"


async def test_silent_engine_is_a_timeout(serve) -> None:
    def script(conn: socket.socket, req: bytes) -> None:
        time.sleep(1)

    _, client = serve(script)
    with pytest.raises(UpstreamTimeout):
        await client.request("POST", "/x", b"{}")


async def test_nothing_listening_is_an_upstream_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = EngineClient(EngineEndpoint("127.0.0.1", port))
    with pytest.raises(UpstreamError, match="cannot connect"):
        await client.request("POST", "/x", b"{}")
