"""A fake CommandRunner for `loader.activator.dm_verity`: device-mapper cannot run on dev/CI
kernels."""

from __future__ import annotations

from collections.abc import Sequence

from loader.activator.dm_verity import CommandResult


class FakeRunner:
    """Records every command; the one starting with `fail` exits 1 with a recognisable stderr.

    `stdout` maps a command prefix to what it prints (e.g. a `dmsetup ls` listing).
    """

    def __init__(self, fail: str | None = None, stdout: dict[str, str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.stdout = stdout or {}

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        line = " ".join(argv)
        if self.fail and line.startswith(self.fail):
            return CommandResult(1, "", f"{self.fail}: simulated failure")
        printed = [out for prefix, out in self.stdout.items() if line.startswith(prefix)]
        return CommandResult(0, "".join(printed), "")
