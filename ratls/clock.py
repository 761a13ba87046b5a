"""Time is injected everywhere in `ratls`; this is the only place that reads the wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The default clock of entry points (CLI, client factories): aware UTC now."""
    return datetime.now(UTC)
