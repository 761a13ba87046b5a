"""The service's one settings object.

Every `appliance serve` flag is also an `APPLIANCE_*` variable.

Precedence: command-line flag > environment > default. Secrets (`load_token`, `management_token`)
are `SecretStr` so that a stray log line or repr shows `**********`; pass them through the
environment (`APPLIANCE_LOAD_TOKEN` or `LOAD_TOKEN`, `APPLIANCE_MANAGEMENT_TOKEN`) rather than as
flags, which `ps` shows to every local user.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path("/var/lib/appliance")


def _checked_listen(value: str) -> str:
    split_listen(value)
    return value


# `HOST:PORT` of a listener, checked when the settings are read (a clear error, not a bind error).
ListenAddress = Annotated[str, AfterValidator(_checked_listen)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    # Models and the engine.
    models_dir: Path = Path("/var/lib/appliance/models")
    roothash_dir: Path = Path("/etc/appliance/roothash")
    vllm_port: int = Field(default=8000, ge=1, le=65535)
    vllm_bin: str = "vllm"
    engine_arg: tuple[str, ...] = ()
    # NAME=VALUE for the engine's environment, which is otherwise clean (the loader passes only a
    # few variables such as PATH: never the service's secrets).
    engine_env: tuple[str, ...] = ()
    # "cpu": vLLM's CPU build tuned for a fast start (--enforce-eager, uni executor; development
    # and CI). "production": vLLM's defaults.
    engine_profile: Literal["production", "cpu"] = "production"
    # The engine's own user (no groups, no capabilities): it can then reach nothing of the
    # service's. Required with --tee tdx unless insecure_shared_engine_user.
    engine_user: str | None = None
    insecure_shared_engine_user: bool = False
    # How a verified model reaches the engine. "dm-verity": kernel dm-verity with the pinned
    # parameters and a read-only mount, in this process (needs device-mapper and CAP_SYS_ADMIN:
    # a privileged single-unit setup). "activator": the same, done by the privileged
    # `appliance activator` service on `activator_socket` (the VM's units). "userspace": verify
    # while copying into private storage, then extract (development and CI, which have no
    # device-mapper). Unset: dm-verity with --tee tdx, userspace with simulated.
    model_access: Literal["dm-verity", "activator", "userspace"] | None = None
    activator_socket: Path = Path("/run/appliance-activator/activator.sock")

    # The public API.
    listen: ListenAddress = "0.0.0.0:8443"
    hostname: tuple[str, ...] = ("localhost",)
    workers: int = Field(default=2, ge=1, le=64)
    # Per worker: the thread pool of the Flask routes (lifecycle, status, attestation, receipts);
    # inference runs on the worker's event loop and needs no thread.
    threads: int = Field(default=32, ge=1, le=1024)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Seconds without a byte from the engine before a request fails; there is no total timeout,
    # so a long stream that keeps producing events is never cut.
    upstream_idle_timeout: float = Field(default=600.0, gt=0)
    # What one client can hold of a worker (docs/design.md §10). Seconds from the TCP connection
    # (TLS handshake included) to the end of the first request's head; on a kept-alive connection,
    # from the first byte of the next request (idle, it is closed after 30 s).
    request_head_timeout: float = Field(default=10.0, gt=0)
    # Seconds from the end of a request's head to the end of its body, in all: a 4 MiB body must
    # arrive at 70 KB/s or more.
    request_body_timeout: float = Field(default=60.0, gt=0)
    # Seconds a response may wait on a client that reads none of it (the worker's send buffers
    # are full) before the connection is dropped; a stream cut so is receipted
    # `client_disconnected`.
    response_send_timeout: float = Field(default=30.0, gt=0)
    # Connections one worker holds at once; a connection beyond them is answered 503 and closed.
    # Each also holds an engine connection while it waits for inference: stay under half of the
    # process's open-file limit (the unit sets 65536).
    max_connections: int = Field(default=1000, ge=1)
    # /v1/attestation makes a fresh quote for anyone who asks: per worker, at most `burst` at once
    # and `rate` per second after that; beyond, 429 with Retry-After.
    attestation_rate: float = Field(default=10.0, gt=0)
    attestation_burst: int = Field(default=20, ge=1)
    load_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("load_token", "APPLIANCE_LOAD_TOKEN", "LOAD_TOKEN"),
    )
    insecure_open_lifecycle: bool = False

    # Evidence.
    tee: Literal["tdx", "simulated"] = "tdx"
    # Collateral for --tee tdx: a PCCS base URL; Intel's PCS when unset.
    pccs_url: str | None = None

    # State: the simulated authority, the control socket, the last loaded model, receipts.
    state_dir: Path = DEFAULT_STATE_DIR
    receipts_db: Path | None = None
    receipts_max: int = Field(default=1_000_000, ge=1)

    # Status push to the management plane.
    management_url: str | None = None
    management_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("management_token", "APPLIANCE_MANAGEMENT_TOKEN"),
    )
    # http:// to a loopback receiver (development, tests); https:// otherwise.
    insecure_management_http: bool = False
    enclave_id: str = Field(default_factory=socket.gethostname, min_length=1)
    push_interval: float = Field(default=30.0, gt=0)

    @field_validator("engine_env")
    @classmethod
    def _engine_env_is_assignments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            name, sep, _ = item.partition("=")
            if not sep or not name or not name.replace("_", "").isalnum():
                raise ValueError(f"--engine-env takes NAME=VALUE, got {item!r}")
        return value

    @property
    def engine_environment(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.engine_env)

    @field_validator("hostname")
    @classmethod
    def _hostnames_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not name.strip() for name in value):
            raise ValueError("at least one non-empty --hostname is needed for the certificate SAN")
        return value

    @field_validator("management_url")
    @classmethod
    def _management_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"--management-url must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _lifecycle_is_protected(self) -> Settings:
        if self.load_token is not None and not self.load_token.get_secret_value():
            raise ValueError("--load-token must not be empty (omit it to leave lifecycle closed)")
        if self.insecure_open_lifecycle and self.tee != "simulated":
            raise ValueError(
                "--insecure-open-lifecycle is for development: only with --tee simulated"
            )
        return self

    @model_validator(mode="after")
    def _management_token_travels_safely(self) -> Settings:
        if not self.management_url:
            return self
        if self.management_token is None:
            raise ValueError(
                "--management-url needs --management-token (APPLIANCE_MANAGEMENT_TOKEN)"
            )
        parts = urlsplit(self.management_url)
        if parts.scheme == "http":
            if not self.insecure_management_http:
                raise ValueError(
                    "an http:// --management-url would send the management token in clear: "
                    "use https://, or --insecure-management-http for a loopback receiver"
                )
            if not _is_loopback(parts.hostname or ""):
                raise ValueError(
                    "--insecure-management-http is for a receiver on this machine only: "
                    f"{parts.hostname!r} is not a loopback address"
                )
        return self

    @property
    def effective_model_access(self) -> Literal["dm-verity", "activator", "userspace"]:
        if self.model_access is not None:
            return self.model_access
        return "dm-verity" if self.tee == "tdx" else "userspace"

    # Derived paths. The run directory holds the control socket and the shared state file; it is
    # created 0700 by the supervisor.
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def shared_state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"

    @property
    def receipts_path(self) -> Path:
        return self.receipts_db or self.state_dir / "receipts.sqlite3"

    @property
    def simulated_dir(self) -> Path:
        return self.state_dir / "simulated"

    @property
    def engine_port_url(self) -> str:
        return f"http://127.0.0.1:{self.vllm_port}"

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_listen(self.listen)


def split_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port); a clear ValueError otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - `:PORT` means every interface
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ValueError(
                f"--listen host must be an IP address or localhost, got {host!r}"
            ) from exc
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
