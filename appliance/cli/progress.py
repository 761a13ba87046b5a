"""Progress on stderr for long commands: a bar on a terminal, whole-ten percentages otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

BAR_WIDTH = 30


class ProgressBar:
    """A `progress(fraction)` callback. Call `finish()` to end the line."""

    def __init__(
        self, label: str, stream: TextIO | None = None, *, tty: bool | None = None
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._shown = -1  # last percentage (terminal) or tenth (log) written

    def __call__(self, fraction: float) -> None:
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        if self.tty:
            if percent != self._shown:
                filled = percent * BAR_WIDTH // 100
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.stream.write(f"\r{self.label} [{bar}] {percent:3d}%")
                self.stream.flush()
                self._shown = percent
        elif percent // 10 > self._shown:
            self._shown = percent // 10
            self.stream.write(f"{self.label}: {self._shown * 10}%\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()
