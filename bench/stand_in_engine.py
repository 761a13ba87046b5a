#!/usr/bin/env python3
"""A fast stand-in for vLLM, for bench/proxy.py: the proxy under test should be the bottleneck.

Same command line as `vllm serve MODEL --host H --port P --served-model-name N [...]` (so the
appliance's loader can launch it), asyncio protocol (uvloop when installed), TCP_NODELAY, a deep
listen backlog, keep-alive. Answers:

    GET  /health                 200
    POST /v1/chat/completions    a fixed completion (Content-Length), or with `"stream": true`
                                 STAND_IN_EVENTS (default 200) SSE chunks + `data: [DONE]`,
                                 one write per event, STAND_IN_EVENT_INTERVAL seconds apart
                                 (default 0: just yield to the loop), chunked like uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys

EVENTS = int(os.environ.get("STAND_IN_EVENTS", "200"))
# Seconds between a stream's events (0: as fast as the loop goes). An engine emits one event per
# token; pacing makes every proxy relay events one by one, as in production, instead of in
# batches that only form when the proxy falls behind.
EVENT_INTERVAL = float(os.environ.get("STAND_IN_EVENT_INTERVAL", "0"))
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 16},
                 "finish_reason": "length"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24},
}).encode()
EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}\n\n'
)
USAGE = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":200,"total_tokens":208}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                 % len(COMPLETION)) + COMPLETION
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               b"transfer-encoding: chunked\r\n\r\n")
EVENT_CHUNK, USAGE_CHUNK, DONE_CHUNK = chunk(EVENT), chunk(USAGE), chunk(DONE) + b"0\r\n\r\n"
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
NOT_FOUND = (b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
             b'content-length: 22\r\n\r\n{"detail":"Not Found"}')


class Engine(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.buffer = b""
        self.busy = False
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.handle()

    def handle(self) -> None:
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            marker = head.lower().find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4:end], self.buffer[end:]
            if head.startswith(b"GET /health"):
                self.transport.write(HEALTH)
            elif head.startswith(b"POST /v1/chat/completions"):
                if b'"stream": true' in body or b'"stream":true' in body:
                    self.busy = True
                    asyncio.get_running_loop().create_task(self.stream())
                    return
                self.transport.write(JSON_RESPONSE)
            else:
                self.transport.write(NOT_FOUND)

    async def stream(self) -> None:
        write = self.transport.write
        write(STREAM_HEAD)
        for _ in range(EVENTS):
            if self.transport.is_closing():
                return
            write(EVENT_CHUNK)
            await asyncio.sleep(EVENT_INTERVAL)
        write(USAGE_CHUNK)
        write(DONE_CHUNK)
        self.busy = False
        self.handle()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Engine, host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="bench")
    args, _unknown = parser.parse_known_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found]
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
