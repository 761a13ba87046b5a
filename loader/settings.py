"""Settings of the model lifecycle: directories, health checks, supervision and restart policy.

Plain frozen dataclasses: the entry point (`appliance`) reads its own settings (environment, flags)
and builds these. Every bound is checked on construction, so a bad value fails at start-up.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from loader.errors import EngineStartError


def _require_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not value > 0:
            raise ValueError(f"{type(owner).__name__}.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class RestartPolicy:
    """Restarts of an engine that failed after it was ready: bounded, with exponential backoff.

    `max_restarts` consecutive attempts are made, waiting `initial_backoff * multiplier**(n-1)`
    seconds (at most `max_backoff`) before attempt n. An engine that then stays ready for
    `stable_after` seconds has its count reset. `max_restarts=0` disables restarts.
    """

    max_restarts: int = 3
    initial_backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 30.0
    stable_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"RestartPolicy.max_restarts must be >= 0, got {self.max_restarts}")
        if self.multiplier < 1:
            raise ValueError(f"RestartPolicy.multiplier must be >= 1, got {self.multiplier}")
        _require_positive(self, "initial_backoff", "max_backoff", "stable_after")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before restart `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError(f"restart attempts count from 1, got {attempt}")
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))


@dataclass(frozen=True)
class HealthSettings:
    """How the engine's health endpoint is polled while it starts and watched once it is ready."""

    startup_timeout: float = 600.0  # large models take minutes to load onto GPUs
    poll_interval: float = 0.1  # while starting; small, since it adds directly to load time
    probe_timeout: float = 2.0
    check_interval: float = 1.0  # once ready: process exit and /health
    failure_threshold: int = 3  # consecutive failed checks of a live process before it is failed
    expected_startup: float = 20.0  # only shapes the progress figure while waiting

    def __post_init__(self) -> None:
        _require_positive(
            self, "startup_timeout", "poll_interval", "probe_timeout", "check_interval",
            "failure_threshold", "expected_startup",
        )


@dataclass(frozen=True)
class EngineUser:
    """The engine's own user (see loader/engine/confinement.py)."""

    name: str
    uid: int
    gid: int
    setpriv: str  # absolute path of the setpriv executable

    @classmethod
    def resolve(cls, name: str) -> EngineUser:
        """The user `name`, checked to be neither root nor this process's user."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EngineStartError(
                f"the engine user {name!r} does not exist", check="engine user"
            ) from None
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise EngineStartError(
                "the engine must not run as root", check="engine user", actual=name
            )
        if entry.pw_uid == os.geteuid():
            raise EngineStartError(
                "the engine user must differ from the service's user",
                check="engine user",
                actual=name,
            )
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
        if setpriv is None:
            raise EngineStartError(
                "setpriv (util-linux) is needed to start the engine as its own user",
                check="engine user",
            )
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid, setpriv=setpriv)


@dataclass(frozen=True)
class LoaderSettings:
    """Everything the load path and its supervision need, besides the engine kind."""

    models_dir: Path  # model images, by name
    roothash_dir: Path  # trusted records, `<name>.roothash`
    work_dir: Path  # private verified copies (dev) or mount points
    state_dir: Path  # the record of the last successful load, restored at start
    health: HealthSettings = field(default_factory=HealthSettings)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace: float = 10.0  # SIGTERM to SIGKILL; vLLM stops in about 4 s
    kill_timeout: float = 5.0  # after SIGKILL, until the group must be gone
    log_tail_lines: int = 200
    # The engine's own user; None runs it as this process's user (development only).
    engine_user: EngineUser | None = None

    def __post_init__(self) -> None:
        _require_positive(self, "stop_grace", "kill_timeout", "log_tail_lines")
