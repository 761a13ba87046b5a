"""A management plane on loopback for status-push tests: records what it accepts, refuses the
first `fail_first` pushes with 503. With `forward_to`, a relay instead: each push is recorded and
passed on (same path, same Authorization) to the real receiver there, whose status it answers
with; the tests then hold the real signed documents an appliance sent."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class PushReceiver:
    def __init__(self, fail_first: int = 0, forward_to: str | None = None) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # (path, Authorization, body)
        self.answers: list[int] = []  # with forward_to: the real receiver's status, per push
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.calls += 1
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                if forward_to is not None:
                    status = receiver._forward(forward_to, self.path,
                                               self.headers["Authorization"], raw)
                    receiver.received.append((self.path, self.headers["Authorization"], body))
                    receiver.answers.append(status)
                else:
                    accepted = receiver.calls > receiver.fail_first
                    status = 204 if accepted else 503
                    if accepted:
                        receiver.received.append((self.path, self.headers["Authorization"], body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def _forward(base: str, path: str, authorization: str, body: bytes) -> int:
        try:
            response = httpx.post(base + path, content=body, timeout=30,
                                  headers={"Authorization": authorization,
                                           "Content-Type": "application/json"})
        except httpx.HTTPError:
            return 502
        return response.status_code

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} pushes arrived"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
