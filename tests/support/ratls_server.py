"""A small real HTTPS server for RA-TLS client tests: stdlib `http.server` over our server context.

It presents whatever identity its source gives (through `RotatingServerContext`), answers
`/v1/attestation`, `/v1/attestation/collateral`, `/v1/models` and a minimal
`/v1/chat/completions` (JSON or SSE), and records, per TLS connection, every application byte it
receives: the tests assert that a refused server received nothing.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import _SocketWriter  # type: ignore[attr-defined]
from urllib.parse import parse_qs, urlsplit

from attest.providers import QuoteProvider
from ratls.clock import Clock
from ratls.errors import NonceError
from ratls.evidence import NonceEvidence, make_nonce_evidence, parse_nonce_hex
from ratls.issuer import Identity, IdentitySource
from ratls.server import RotatingServerContext, presented_identity

MODEL = "sim-model"
COMPLETION_TEXT = "Hello from the simulated TD."


@dataclass
class ConnectionRecord:
    received: bytearray = field(default_factory=bytearray)
    certificate_sha256: str | None = None
    handshake_error: str | None = None
    requests: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


class _RecordingReader(io.RawIOBase):
    def __init__(self, sock: ssl.SSLSocket, record: ConnectionRecord) -> None:
        self._sock, self._record = sock, record

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        try:
            count = self._sock.recv_into(buffer)
        except (ConnectionError, ssl.SSLError):
            return 0
        self._record.received += bytes(buffer[:count])
        return count


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RatlsTestServer

    def setup(self) -> None:
        self.record = ConnectionRecord()
        self.server.connections.append(self.record)
        self.connection = self.request
        self.connection.settimeout(10)
        try:
            self.connection.do_handshake()
            self.identity = presented_identity(self.connection)
            self.record.certificate_sha256 = self.identity.fingerprint.hex()
        except (OSError, ssl.SSLError) as exc:
            self.record.handshake_error = str(exc)
        self.rfile = io.BufferedReader(_RecordingReader(self.connection, self.record))
        self.wfile = _SocketWriter(self.connection)

    def handle(self) -> None:
        if self.record.handshake_error is None:
            super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.record.closed.set()

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.record.requests.append(f"GET {url.path}")
        if url.path == "/v1/attestation":
            nonce_hex = parse_qs(url.query).get("nonce", [""])[0]
            try:
                evidence = self.server.nonce_evidence(self.identity, parse_nonce_hex(nonce_hex))
            except NonceError as exc:
                return self._json(
                    400,
                    {
                        "error": {
                            "message": str(exc),
                            "type": "invalid_request",
                            "param": "nonce",
                            "code": exc.check,
                        }
                    },
                )
            return self._raw(200, evidence.model_dump_json().encode())
        if url.path == "/v1/attestation/collateral":
            return self._raw(200, self.server.collateral_json.encode())
        if url.path == "/v1/models":
            digest = self.identity.model_digest.hex() if self.identity.model_digest else None
            return self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": MODEL,
                            "object": "model",
                            "created": 0,
                            "owned_by": "appliance",
                            "digest": digest,
                        }
                    ],
                },
            )
        self._json(
            404,
            {"error": {"message": "not found", "type": "not_found", "param": None, "code": None}},
        )
        return None

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.record.requests.append(f"POST {url.path}")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if url.path != "/v1/chat/completions":
            return self._json(
                404,
                {
                    "error": {
                        "message": "not found",
                        "type": "not_found",
                        "param": None,
                        "code": None,
                    }
                },
            )
        if self.server.misdirect_posts > 0:
            # Evidence superseded (as after a model load): 421 and close, like the appliance.
            self.server.misdirect_posts -= 1
            self.close_connection = True
            body = b'{"error": {"message": "superseded", "type": "x", "param": null, "code": null}}'
            self.send_response(421)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if body.get("stream"):
            return self._stream_chat()
        self._json(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": COMPLETION_TEXT},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
            },
        )
        return None

    def _stream_chat(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in COMPLETION_TEXT.split(" "):
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
            }
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _json(self, status: int, document: dict) -> None:
        self._raw(status, json.dumps(document).encode())

    def _raw(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RatlsTestServer(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1; `connections` lists what each TLS connection received."""

    daemon_threads = True

    def __init__(
        self,
        source: IdentitySource,
        provider: QuoteProvider,
        *,
        collateral_json: str,
        clock: Clock,
        answer_nonce: Callable[[bytes], bytes] | None = None,
        forge_nonce_quote: bytes | None = None,
    ) -> None:
        self.contexts = RotatingServerContext(source)
        self.provider = provider
        self.collateral_json = collateral_json
        self.clock = clock
        # A misbehaving server may answer with evidence for another nonce than the one asked.
        self.answer_nonce = answer_nonce or (lambda nonce: nonce)
        # ... or echo the nonce asked for around a quote made for `forge_nonce_quote`.
        self.forge_nonce_quote = forge_nonce_quote
        self.connections: list[ConnectionRecord] = []
        self.misdirect_posts = 0  # how many POSTs to answer 421 + close before answering
        super().__init__(("127.0.0.1", 0), _Handler)
        self.port = self.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def nonce_evidence(self, identity: Identity, nonce: bytes) -> NonceEvidence:
        if self.forge_nonce_quote is not None:
            forged = make_nonce_evidence(
                identity, self.provider, self.forge_nonce_quote, now=self.clock()
            )
            return forged.model_copy(update={"nonce": nonce.hex()})
        return make_nonce_evidence(
            identity, self.provider, self.answer_nonce(nonce), now=self.clock()
        )

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = self.socket.accept()
        # The handshake happens in the handler thread, so a slow client blocks nobody.
        return self.contexts.context().wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # clients that refuse us close abruptly; that is the point of the tests

    def start(self) -> RatlsTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def received_until_closed(self, index: int = -1) -> bytes:
        """Everything connection `index` received, once the client has closed it."""
        record = self.connections[index]
        if not record.closed.wait(timeout=10):
            raise AssertionError(f"connection {index} is still open")
        return bytes(record.received)
