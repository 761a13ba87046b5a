"""One engine process group: spawn, watch, keep the output tail, stop without leftovers.

The engine runs in its own session (so its own process group): vLLM starts helper processes
(EngineCore, workers) that must go when it goes, and a signal to the group reaches all of them.
The leader is not reaped until the whole group is gone, so its pid, which is the group id, cannot
be reused while we may still signal the group.

Output is kept in a bounded ring of lines. Until the engine is serving, each line also goes to
the appliance log (start-up output explains failures: a bad flag, a model it cannot load); once
it serves, nothing it prints is logged, as prompts may appear there.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from loader.engine.confinement import confined_command
from loader.errors import EngineStartError, EngineStopError
from loader.settings import EngineUser

logger = logging.getLogger(__name__)
startup_output = logging.getLogger("loader.engine.startup")

MAX_LINE_BYTES = 2048  # longer output lines are split; a line is for a human to read
_STOP_POLL_SECONDS = 0.02


class LogTail:
    """The last `max_lines` lines of a stream, safe to read from any thread."""

    def __init__(self, max_lines: int) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def lines(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._lines)


def printable(raw: bytes) -> str:
    """A line of engine output as text that is safe to show: no control characters."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return "".join(c if c.isprintable() or c == "\t" else "\N{REPLACEMENT CHARACTER}" for c in text)


# What a line that states a failure looks like in Python and vLLM output.
_FAILURE_LINE = re.compile(r"\b[A-Za-z]*(Error|Exception)\b|\bERROR\b|\bfatal\b", re.IGNORECASE)


def failure_cause(lines: tuple[str, ...]) -> str | None:
    """The line that most likely says why an engine failed: the last line that states an error
    (a traceback ends with it), else the last non-empty line."""
    for line in reversed(lines):
        if _FAILURE_LINE.search(line):
            return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), None)


def live_group_members(pgid: int) -> list[int]:
    """Pids of processes in group `pgid` that have not exited (zombies do not count)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:  # exited while we looked
            continue
        # Fields after the command name, which may itself contain spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2 :].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def returncode_of(status: os.waitid_result) -> int:
    """Popen's convention: the exit status, or minus the signal that ended the process."""
    if status.si_code == os.CLD_EXITED:
        return status.si_status
    return -status.si_status


class EngineProcess:
    """A running engine's process group. Create with `spawn`; always end with `stop`."""

    def __init__(self, popen: subprocess.Popen[bytes], tail: LogTail) -> None:
        self._popen = popen
        self._tail = tail
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._starting = threading.Event()
        self._starting.set()
        self._reader = threading.Thread(
            target=self._read_output, args=(popen.stdout,), name=f"engine-output-{popen.pid}",
            daemon=True,
        )
        self._reader.start()

    @classmethod
    def spawn(
        cls,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        tail_lines: int,
        cwd: Path | None = None,
        user: EngineUser | None = None,
    ) -> EngineProcess:
        """Start `command` in a new session with exactly `env` (as `user`, when given); stdout
        and stderr go to the tail."""
        try:
            popen = subprocess.Popen(
                confined_command(user, command) if user is not None else list(command),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            raise EngineStartError(
                f"cannot execute the engine {command[0]}: {error.strerror}",
                check="engine executable",
            ) from error
        logger.info(
            "engine started: pid %d, %s, user %s",
            popen.pid, Path(command[0]).name, user.name if user is not None else "the service's",
        )
        return cls(popen, LogTail(tail_lines))

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def pgid(self) -> int:
        return self._popen.pid  # start_new_session: the leader's pid is the group id

    def log_tail(self) -> tuple[str, ...]:
        return self._tail.lines()

    def serving(self) -> None:
        """The engine is healthy: from now on its output is kept in the tail only."""
        self._starting.clear()

    def drain_output(self, timeout: float) -> None:
        """Wait (up to `timeout`) until the exited engine's output has all been read."""
        self._reader.join(timeout)

    def returncode(self) -> int | None:
        """The leader's exit status once it has exited, else None. Does not reap it."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        try:
            status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped meanwhile by stop()
            return self._popen.returncode
        return None if status is None else returncode_of(status)

    def live_members(self) -> list[int]:
        return live_group_members(self.pgid)

    def stop(self, grace: float, kill_timeout: float) -> int | None:
        """SIGTERM to the group, SIGKILL after `grace` seconds, then reap. Idempotent.

        Returns the leader's exit status. Raises EngineStopError if a member survives SIGKILL
        for `kill_timeout` seconds (it cannot, short of an uninterruptible sleep in the kernel).
        """
        with self._stop_lock:
            if not self._stopped:
                self._terminate_group(grace, kill_timeout)
                self._popen.wait()  # the group is gone: reaping the leader frees the group id
                self._reader.join(timeout=2.0)
                self._stopped = True
                logger.info("engine stopped: pid %d, status %s", self.pid, self._popen.returncode)
            return self._popen.returncode

    def _terminate_group(self, grace: float, kill_timeout: float) -> None:
        # 1. SIGTERM lets vLLM shut down its helpers and free the accelerator cleanly.
        if not self._signal_group(signal.SIGTERM):
            return
        if self._wait_until_gone(grace):
            return
        # 2. SIGKILL whatever is left, e.g. a helper that ignores SIGTERM or outlived the leader.
        logger.warning(
            "engine group %d outlived SIGTERM by %.1f s; sending SIGKILL", self.pgid, grace
        )
        self._signal_group(signal.SIGKILL)
        if not self._wait_until_gone(kill_timeout):
            raise EngineStopError(
                f"engine process group {self.pgid} survived SIGKILL",
                check="engine stop", expected="no live process", actual=self.live_members(),
                log_tail=self.log_tail(),
            )

    def _signal_group(self, signum: signal.Signals) -> bool:
        """Signal the group; False if it has no live member left."""
        if not self.live_members():
            return False
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        return True

    def _wait_until_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.live_members():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_STOP_POLL_SECONDS)
        return True

    def _read_output(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        with stream:
            while raw := stream.readline(MAX_LINE_BYTES):
                line = printable(raw)
                self._tail.append(line)
                if self._starting.is_set():
                    startup_output.info("engine %d: %s", self._popen.pid, line)
