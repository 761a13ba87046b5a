"""The real fleet console in tests: `appliance console` as a subprocess (gunicorn on a port), its
registry written from the appliances' URLs, and a policy pinning the simulated TD."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.engines import PROJECT_ROOT
from support.pinned import simulated_td_pins
from support.processes import stop_gracefully
from support.service import APPLIANCE


@dataclass
class Console:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    exited: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def enclaves(self) -> dict[str, dict[str, Any]]:
        """`GET /api/v1/enclaves`, by id."""
        response = httpx.get(f"{self.url}/api/v1/enclaves", timeout=10)
        assert response.status_code == 200, response.text
        return {entry["id"]: entry for entry in response.json()["enclaves"]}

    def stop(self, timeout: float = 20) -> int:
        if self.exited is None:
            self.exited = stop_gracefully(self.process, timeout, self.log)
        return self.exited


def write_pinned_policy(path: Path, **extra: str) -> Path:
    """A TOML policy pinning the simulated TD's MRTD and RTMR0-2 (`extra` keys replace them)."""
    pins = simulated_td_pins() | {key: [value] for key, value in extra.items()}
    path.write_text("".join(f'{key} = ["{values[0]}"]\n' for key, values in pins.items()))
    return path


def write_registry(path: Path, appliances: list[dict[str, str]]) -> Path:
    """A TOML registry; each appliance a table of strings (id, url, policy, ...)."""
    tables = ["[[appliances]]\n" + "".join(f'{key} = "{value}"\n' for key, value in entry.items())
              for entry in appliances]
    path.write_text("\n".join(tables))
    return path


def start_console(work: Path, registry: Path, *, port: int, token: str,
                  args: list[str] | None = None) -> Console:
    log_path = work / f"console-{port}.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    environment |= {"PYTHONPATH": str(PROJECT_ROOT), "APPLIANCE_CONSOLE_MANAGEMENT_TOKEN": token}
    command = [*APPLIANCE, "console", "--registry", str(registry),
               "--listen", f"127.0.0.1:{port}", "--state-db", str(work / f"console-{port}.db"),
               *(args or [])]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=environment, stdout=log_file,
                                   stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    console = Console(process, port, log_path)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"appliance console exited with {process.returncode}:\n"
                                 f"{console.log()}")
        try:
            if httpx.get(f"{console.url}/healthz", timeout=1).status_code == 200:
                return console
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            console.stop()
            raise AssertionError(f"appliance console not answering in 30 s:\n{console.log()}")
        time.sleep(0.1)
