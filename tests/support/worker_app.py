"""Support for the worker-app tests: the fake vLLM as a real process, a real RA-TLS identity from
the simulated authority, and a control server standing in for the supervisor's lifecycle (the real
supervisor is exercised by tests/integration)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from appliance.channel.control import ControlRequest
from appliance.channel.identity import identity_document
from appliance.channel.shared_state import SharedState, publish
from appliance.errors import Conflict
from appliance.settings import Settings
from ratls.issuer import IdentityIssuer
from support.engines import FAKE_VLLM, free_port

MODEL = "tiny"
DIGEST = "ab" * 32
LOAD_TOKEN = "load-token-for-tests"


@dataclass
class FakeEngine:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_fake_engine(tmp_path: Path, **faults: object) -> FakeEngine:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    port = free_port()
    env = {**os.environ, **{f"FAKE_VLLM_{k.upper()}": str(v) for k, v in faults.items()}}
    log_path = tmp_path / f"fake-vllm-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(FAKE_VLLM), "serve", str(model_dir), "--host", "127.0.0.1",
             "--port", str(port), "--served-model-name", MODEL],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return FakeEngine(port, process, log_path)
        except OSError:
            pass
        assert process.poll() is None, "fake engine exited at start"
        assert time.monotonic() < deadline, "fake engine not healthy in 20 s"
        time.sleep(0.05)


def stop_engine(engine: FakeEngine) -> None:
    engine.process.terminate()
    try:
        engine.process.wait(10)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait()


@dataclass
class SupervisorDouble:
    """Answers the control routes a worker uses; records lifecycle requests."""

    settings: Settings
    issuer: IdentityIssuer
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    busy: bool = False
    status: dict[str, Any] = field(default_factory=lambda: {
        "proxy_status": "ready", "proxy_message": "ready", "proxy_progress": 1.0,
        "loaded_model": MODEL, "loaded_model_digest": DIGEST,
    })

    def publish(self) -> None:
        identity = self.issuer.current()
        publish(self.settings.shared_state_file, SharedState(
            status=self.status, identity_generation=identity.generation,
            certificate_sha256=identity.fingerprint.hex(),
        ))

    def routes(self) -> dict[tuple[str, str], Any]:
        def lifecycle(path: str):
            def route(request: ControlRequest) -> tuple[int, Any]:
                if self.busy:
                    raise Conflict("a load is already running")
                self.requests.append((path, request.body))
                return 202, self.status | {"proxy_status": "loading"}
            return route

        return {
            ("GET", "/status"): lambda request: (200, self.status | (
                {"engine_log_tail": ["line"]} if request.query.get("engine_log") == "1" else {})),
            ("POST", "/load"): lifecycle("/load"),
            ("POST", "/unload"): lifecycle("/unload"),
            ("GET", "/identity"): lambda request: (200, identity_document(self.issuer.current())),
            ("POST", "/attestation"): lambda request: (200, request.body),
            ("GET", "/collateral"): lambda request: (200, {"bundle": "collateral"}),
        }


def service_settings(tmp_path: Path, engine_port: int, **overrides: Any) -> Settings:
    state_dir = tmp_path / "state"
    (state_dir / "run").mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "state_dir": state_dir, "models_dir": tmp_path, "roothash_dir": tmp_path,
        "vllm_port": engine_port,
        "load_token": LOAD_TOKEN, "tee": "simulated", "max_body_bytes": 64 * 1024,
        "upstream_idle_timeout": 5.0,
    }
    return Settings(**(options | overrides))




class AsgiClient:
    """Drives an ASGI app in process (httpx's ASGI transport), synchronously, on one event loop:
    the app's engine connections belong to the loop that opened them. Runs the app's lifespan."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._runner = asyncio.Runner()
        self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                       base_url="https://appliance.test")
        self._lifespan_inbox: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan: asyncio.Task[None] | None = None
        started = self._runner.run(self._lifespan_step("lifespan.startup"))
        assert started == "lifespan.startup.complete"

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        return self._runner.run(self._http.request(method, url, **options))

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def exchange(self, path: str, body: bytes, disconnect_after: float | None = None, *,
                 method: str = "POST", extensions: dict[str, Any] | None = None,
                 ) -> tuple[list[dict[str, Any]], float]:
        """Sends `body` as raw ASGI, for what httpx cannot show: a response the app leaves
        incomplete, a client that disconnects `disconnect_after` seconds once its body is sent,
        or a connection's TLS (the scope's `extensions`). Returns the messages the app sent and
        how long it took to return."""
        async def exchange() -> tuple[list[dict[str, Any]], float]:
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.sleep(3600 if disconnect_after is None else disconnect_after)
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
                     "root_path": "", "query_string": b"", "server": ("appliance.test", 443),
                     "client": ("127.0.0.1", 50000),
                     "headers": [(b"content-type", b"application/json")]}
            if extensions is not None:
                scope["extensions"] = extensions
            started = time.monotonic()
            await self._app(scope, receive, send)
            return sent, time.monotonic() - started
        return self._runner.run(exchange())

    def close(self) -> None:
        try:
            stopped = self._runner.run(self._lifespan_step("lifespan.shutdown"))
            assert stopped == "lifespan.shutdown.complete"
            self._runner.run(self._http.aclose())
        finally:
            self._runner.close()

    async def _lifespan_step(self, message: str) -> str:
        if self._lifespan is None:
            self._lifespan_inbox, self._lifespan_outbox = asyncio.Queue(), asyncio.Queue()
            self._lifespan = asyncio.create_task(self._app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._lifespan_inbox.get, self._lifespan_outbox.put))
        assert self._lifespan_inbox is not None and self._lifespan_outbox is not None
        await self._lifespan_inbox.put({"type": message})
        return (await asyncio.wait_for(self._lifespan_outbox.get(), 5))["type"]
