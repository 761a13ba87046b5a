"""The record of the last successful load, kept so that a restarted appliance serves it again.

The file holds only a name and a digest; restoring goes through the whole load path again (name
resolution, trusted record, verification) with the recorded digest as the expected one, so a
tampered state file can at worst ask for a model that is pinned anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from loader.errors import StateStoreError

LAST_LOAD_FILE = "last-load.json"
FORMAT_VERSION = 1
_DIGEST = re.compile(r"[0-9a-f]{2,128}")


@dataclass(frozen=True)
class LastLoad:
    model: str
    digest: str  # lower-case hex root hash


class _LastLoadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    version: int
    model: str
    digest: str


class LastLoadStore:
    """`<state_dir>/last-load.json`, replaced atomically (write, fsync, rename, fsync dir)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LAST_LOAD_FILE

    def save(self, last: LastLoad) -> None:
        if not _DIGEST.fullmatch(last.digest):
            raise ValueError(f"digest must be lower-case hex, got {last.digest!r}")
        content = _LastLoadFile(version=FORMAT_VERSION, model=last.model, digest=last.digest)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{LAST_LOAD_FILE}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(content.model_dump_json() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._sync_directory()

    def load(self) -> LastLoad | None:
        """The recorded load, None if there is none; StateStoreError if it cannot be trusted."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateStoreError(f"cannot read {self.path}: {error.strerror}") from error
        try:
            content = _LastLoadFile.model_validate_json(raw)
        except ValidationError as error:
            raise StateStoreError(
                f"{self.path} is malformed: {error.errors()[0]['msg']}", check="last-load format",
            ) from None
        if content.version != FORMAT_VERSION:
            raise StateStoreError(
                f"{self.path} has an unknown format", check="last-load version",
                expected=FORMAT_VERSION, actual=content.version,
            )
        if not _DIGEST.fullmatch(content.digest):
            raise StateStoreError(
                f"{self.path} holds a digest that is not lower-case hex",
                check="last-load digest", expected="lower-case hex", actual=content.digest,
            )
        return LastLoad(content.model, content.digest)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.path.parent.exists():
            self._sync_directory()

    def _sync_directory(self) -> None:
        descriptor = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
