"""Stopping a service under test the way systemd would: SIGTERM, then a bounded wait."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable


def stop_gracefully(
    process: subprocess.Popen[bytes], timeout: float, log: Callable[[], str]
) -> int:
    """SIGTERM and the exit status; a process that outlives `timeout` is killed and the test
    fails with `log()`."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args!r} did not stop in {timeout} s:\n{log()}") from None
