"""The small state file the supervisor publishes and the API workers read on their hot path.

It carries what every proxied request needs (is a model ready, its name and digest) and the
identity generation, so that a worker notices a model change or a certificate rotation with one
`stat()` instead of a round trip to the supervisor. Secrets never go in it: a worker fetches the
key over the control socket when the generation changes. The supervisor replaces the file
atomically (write a temporary file, then rename), so a reader sees the old or the new state, and
the new inode tells it the file changed.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SharedState:
    status: dict[str, Any]
    identity_generation: int
    certificate_sha256: str | None = None

    @property
    def ready(self) -> bool:
        return self.status.get("proxy_status") == "ready" and bool(self.status.get("loaded_model"))

    @property
    def model(self) -> str | None:
        return self.status.get("loaded_model")

    @property
    def digest(self) -> str | None:
        return self.status.get("loaded_model_digest")

    def to_json(self) -> bytes:
        return json.dumps(
            {"status": self.status, "identity_generation": self.identity_generation,
             "certificate_sha256": self.certificate_sha256},
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SharedState:
        document = json.loads(data)
        return cls(
            status=dict(document["status"]),
            identity_generation=int(document["identity_generation"]),
            certificate_sha256=document.get("certificate_sha256"),
        )


NOT_STARTED = SharedState(
    status={"proxy_status": "idle", "proxy_message": "supervisor not started",
            "proxy_progress": 0.0, "loaded_model": None, "loaded_model_digest": None},
    identity_generation=-1,
)


def publish(path: Path, state: SharedState) -> None:
    """Atomically replaces the state file (readable by the workers' user only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(state.to_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SharedStateReader:
    """A worker's cached view: re-reads the file only when its inode, size or mtime changed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._state = NOT_STARTED

    def current(self) -> SharedState:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return NOT_STARTED
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._key:
            return self._state
        with self._lock:
            if key != self._key:
                try:
                    state = SharedState.from_json(self._path.read_bytes())
                except (OSError, ValueError, KeyError, TypeError):
                    return self._state  # mid-replacement or damaged: keep the last good view
                self._state, self._key = state, key
            return self._state
