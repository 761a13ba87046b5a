"""A token bucket: at most `burst` requests at once, refilled at `rate` per second.

It bounds `/v1/attestation`, which anyone may call and which costs a fresh quote each time
(docs/design.md §10). One bucket per worker process; the Flask routes' threads share it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        """`clock`: monotonic seconds (time.monotonic)."""
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float | None:
        """Takes a token: None when one was there, else the seconds until the next one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            return (1 - self._tokens) / self._rate
