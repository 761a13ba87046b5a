"""The real appliance in tests: `appliance serve` as a subprocess (supervisor + gunicorn + engine),
model images packed with `appliance model pack`, and clients that verify its RA-TLS evidence."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.engines import FAKE_VLLM, PROJECT_ROOT, free_port
from support.processes import stop_gracefully

APPLIANCE = [sys.executable, "-m", "appliance"]


def pack_model(work: Path, name: str, files: dict[str, str]) -> tuple[Path, Path, str]:
    """Packs a small model directory made of `files`; returns (models dir, roothash dir, digest)."""
    source = work / "sources" / name
    source.mkdir(parents=True)
    for relative, text in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    return pack_model_dir(work, name, source)


def pack_model_dir(work: Path, name: str, source: Path) -> tuple[Path, Path, str]:
    """Packs `source` with `appliance model pack`; returns (models dir, roothash dir, digest)."""
    models, roothash = work / "models", work / "roothash"
    subprocess.run(
        [*APPLIANCE, "model", "pack", str(source), "--name", name, "--models-dir", str(models),
         "--roothash-dir", str(roothash)],
        check=True, capture_output=True, timeout=120,
    )
    record = json.loads((roothash / f"{name}.roothash").read_text())
    return models, roothash, record["root_hash"]


@dataclass
class Service:
    """A running `appliance serve`; `stop()` checks it exits 0."""

    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log_path: Path
    engine_port: int
    load_token: str | None
    spawn_log: Path
    exited: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def sim_root(self) -> Path:
        return self.state_dir / "simulated" / "root-ca.pem"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.load_token}"}

    def engine_pids(self) -> list[int]:
        if not self.spawn_log.exists():
            return []
        return [json.loads(line)["pid"] for line in self.spawn_log.read_text().splitlines()]

    def stop(self, timeout: float = 30) -> int:
        if self.exited is None:
            self.exited = stop_gracefully(self.process, timeout, lambda: self.log()[-4000:])
        return self.exited


def start_service(work: Path, models: Path, roothash: Path, *,
                  load_token: str | None = "integration-load-token",
                  env: dict[str, str] | None = None, engine_env: dict[str, str] | None = None,
                  args: list[str] | None = None, vllm_bin: Path = FAKE_VLLM,
                  ready_timeout: float = 30, port: int | None = None,
                  state_dir: Path | None = None) -> Service:
    """`port` and `state_dir` (free and `work/state-<port>` by default) for a test that must
    name them before the appliance starts: a registry of its URL, a simulated authority made
    in advance."""
    port, engine_port = port or free_port(), free_port()
    state_dir = state_dir or work / f"state-{port}"
    spawn_log = work / f"spawns-{port}.jsonl"
    log_path = work / f"serve-{port}.log"
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("APPLIANCE_", "FAKE_VLLM_")) and k != "LOAD_TOKEN"}
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    engine_env = {"FAKE_VLLM_SPAWN_LOG": str(spawn_log)} | (engine_env or {})
    if load_token is not None:
        environment["LOAD_TOKEN"] = load_token  # through the environment, not argv
    environment |= env or {}
    command = [
        *APPLIANCE, "serve", "--tee", "simulated", "--vllm-bin", str(vllm_bin),
        "--vllm-port", str(engine_port), "--listen", f"127.0.0.1:{port}",
        "--hostname", "localhost", "--hostname", "127.0.0.1", "--state-dir", str(state_dir),
        "--models-dir", str(models), "--roothash-dir", str(roothash), "--workers", "2",
        "--threads", "8", *(f"--engine-env={k}={v}" for k, v in engine_env.items()), *(args or []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=environment, stdout=log_file,
                                   stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    service = Service(process, port, state_dir, log_path, engine_port, load_token, spawn_log)
    deadline = time.monotonic() + 30
    while not _tls_answers(port):
        if process.poll() is not None:
            raise AssertionError(
                f"appliance serve exited with {process.returncode}:\n{service.log()}"
            )
        if time.monotonic() > deadline:
            service.stop()
            raise AssertionError(f"appliance serve not listening in 30 s:\n{service.log()}")
        time.sleep(0.1)
    return service


def _tls_answers(port: int) -> bool:
    # A readiness probe only: it trusts nothing and sends nothing but a handshake.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            context.wrap_socket(raw),
        ):
            return True
    except OSError:
        return False


def wait_for_status(client: httpx.Client, predicate, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/v1/models/status").json()
        if predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {status}")
        time.sleep(0.05)
