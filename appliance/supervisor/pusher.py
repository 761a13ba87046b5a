"""Status push to the management plane, from the supervisor, on its own thread.

POST `<management-url>/api/v1/enclave/runtime-status` every push interval and at once on every
state change, with `Authorization: Bearer <management token>` and a body signed with the attested
key (ratls signed JSON, which carries the certificate so the receiver can check it). A failed push
is retried with exponential backoff and full jitter. The queue holds one slot: a newer state
replaces an unsent one (latest wins), so a management plane that is down costs a sleeping thread
and never slows serving.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from appliance.metrics import Metrics
from appliance.status_push import PUSH_PATH

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(maximum, initial * factor**attempt)]."""
        return rng.uniform(0.0, min(self.maximum, self.initial * self.factor ** attempt))


class StatusPusher:
    def __init__(
        self,
        *,
        management_url: str,
        token: str,
        enclave_id: str,
        interval: float,
        sign: Callable[[dict[str, Any]], dict[str, Any]],
        clock: Callable[[], datetime],
        metrics: Metrics,
        client: httpx.Client | None = None,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        self._url = management_url.rstrip("/") + PUSH_PATH
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._enclave_id = enclave_id
        self._interval = interval
        self._sign = sign
        self._clock = clock
        self._metrics = metrics
        self._client = client or httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
        self._backoff = backoff
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="status-push", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._changed.set()
        self._thread.join(timeout)
        self._client.close()

    def notify(self, status: dict[str, Any]) -> None:
        """A new state to push now; replaces any state not yet sent."""
        with self._lock:
            self._latest = dict(status)
        self._changed.set()

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            with self._lock:
                status = self._latest
            if status is not None and self._push_once(status):
                attempt = 0
                wait = self._interval
            elif status is None:
                wait = self._interval
            else:
                wait = self._backoff.delay(attempt, self._rng)
                attempt += 1
            # Sleep until the next period, a retry, or a state change (whichever is first).
            self._changed.wait(wait)
            self._changed.clear()

    def _push_once(self, status: dict[str, Any]) -> bool:
        self._sequence += 1
        payload = dict(status) | {
            "enclave_id": self._enclave_id,
            "time": self._clock().isoformat(),
            "sequence": self._sequence,
        }
        try:
            document = self._sign(payload)
            response = self._client.post(self._url, json=document, headers=self._headers)
        except httpx.HTTPError as exc:
            self._metrics.push_failures.inc()
            log.warning("status push to %s failed: %s", self._url, type(exc).__name__)
            return False
        except Exception:
            self._metrics.push_failures.inc()
            log.exception("status push could not be signed or sent")
            return False
        if not 200 <= response.status_code < 300:
            self._metrics.push_failures.inc()
            log.warning("status push to %s refused: HTTP %d", self._url, response.status_code)
            return False
        self._metrics.pushes.inc()
        log.debug("status pushed (sequence %d, %s)", self._sequence, status.get("proxy_status"))
        return True
