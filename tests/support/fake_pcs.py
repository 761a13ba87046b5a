"""A real HTTP server on loopback that answers like Intel's PCS / a PCCS (API v4), serving the
raw PCS responses saved in the vectors (tdx/collateral/tinfoil-verifier/<date>/), with the
issuer chains in the response headers exactly as they were received (URL-encoded PEM).

It counts requests per path so that tests can prove what the cache and offline mode did.
"""

from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit


class FakePcs:
    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset
        self.requests: collections.Counter[str] = collections.Counter()
        # path -> HTTP status to answer instead of the data (e.g. 503).
        self.fail: dict[str, int] = {}
        self.delay_seconds = 0.0
        self.omit_chain_headers = False
        self.oversize = False
        # requested FMSPC -> FMSPC whose document is served instead (a misbehaving server).
        self.fmspc_alias: dict[str, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) for a request, from the dataset directory."""
        if path in self.fail:
            return self.fail[path], b"", {"Error-Message": "injected failure"}
        one = {key: values[0] for key, values in query.items()}
        if path == "/tdx/certification/v4/tcb":
            fmspc = one.get("fmspc", "").lower()
            stem = f"tcb_info_{self.fmspc_alias.get(fmspc, fmspc)}"
            return self._document(f"{stem}.json", f"{stem}_chain.txt", "TCB-Info-Issuer-Chain")
        if path == "/tdx/certification/v4/qe/identity":
            return self._document(
                "qe_identity.json", "qe_identity_chain.txt", "SGX-Enclave-Identity-Issuer-Chain"
            )
        if path == "/sgx/certification/v4/pckcrl":
            stem = f"pck_crl_{one.get('ca', '')}"
            status, body, headers = self._document(
                f"{stem}.crl", f"{stem}_chain.txt", "SGX-PCK-CRL-Issuer-Chain"
            )
            # Like a PCCS: raw DER only with encoding=der, hex-encoded DER otherwise.
            if status == 200 and one.get("encoding") != "der":
                body = body.hex().encode()
            return status, body, headers
        if path == "/sgx/certification/v4/rootcacrl":
            # A PCCS serves the root CA CRL hex-encoded.
            return 200, (self.dataset / "root_ca.crl").read_bytes().hex().encode(), {}
        return 404, b"", {}

    def _document(self, body_name: str, chain_name: str, header: str):
        body_path = self.dataset / body_name
        if not body_path.is_file():
            return 404, b"", {"Error-Message": "no such document"}
        headers = {}
        if not self.omit_chain_headers:
            headers[header] = (self.dataset / chain_name).read_text().strip()
        return 200, body_path.read_bytes(), headers

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pcs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                pcs.requests[parts.path] += 1
                if pcs.delay_seconds:
                    time.sleep(pcs.delay_seconds)
                status, body, headers = pcs.answer(parts.path, parse_qs(parts.query))
                if pcs.oversize and status == 200:
                    body = body + b" " * (2 << 20)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
