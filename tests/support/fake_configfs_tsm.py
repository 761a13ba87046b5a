"""A directory that behaves like the kernel's configfs-tsm report interface.

There is no TDX (and no configfs-tsm) on the test machines, so this stands in for the kernel:
the filesystem calls are real (mkdir, open, read, write, rmdir in a temporary directory), and
after each one it does what the kernel would do: populate a new entry's attribute files, bump
`generation` on every write, and produce `outblob` from `inblob`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from attest.providers.configfs_tsm import TsmFilesystem


def fake_quote(report_data: bytes) -> bytes:
    """What the emulated TDX module returns: recognisable, and carrying the REPORTDATA."""
    return b"FAKE-TDX-QUOTE" + report_data + hashlib.sha256(report_data).digest()


class FakeKernelTsm(TsmFilesystem):
    """Kernel semantics on top of real file operations.

    `provider`: what the `provider` attribute says. `racing_writes`: for each of the next N
    quote requests, how many foreign writes land between our `inblob` write and our
    `outblob` read (each bumps `generation` and replaces `inblob`, as a concurrent writer to
    the same entry would). `outblob_error`: an OSError that reading `outblob` raises.
    """

    def __init__(
        self,
        *,
        provider: str = "tdx_guest",
        racing_writes: list[int] | None = None,
        outblob_error: OSError | None = None,
    ) -> None:
        self.provider = provider
        self.racing_writes = list(racing_writes or [])
        self.outblob_error = outblob_error
        self.entries_created: list[Path] = []
        self.inblob_writes = 0

    def make_entry(self, path: Path) -> None:
        super().make_entry(path)
        self.entries_created.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")

    def remove_entry(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().remove_entry(path)

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        self._bump_generation(path.parent)
        if path.name == "inblob":
            self.inblob_writes += 1
            foreign = self.racing_writes.pop(0) if self.racing_writes else 0
            for n in range(foreign):
                super().write(path, bytes([0xEE - n]) * 64)
                self._bump_generation(path.parent)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            if self.outblob_error is not None:
                raise self.outblob_error
            return fake_quote(super().read(path.parent / "inblob"))
        return super().read(path)

    def _bump_generation(self, entry: Path) -> None:
        generation = entry / "generation"
        generation.write_text(f"{int(generation.read_text()) + 1}\n")
