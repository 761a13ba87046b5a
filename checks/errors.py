"""`CheckedError`: a refusal that names the check, the expected and the actual value."""

from __future__ import annotations

from typing import Any


class CheckedError(Exception):
    """An error that names the check that failed and, where there is one, the expected and the
    actual value. Each package derives its own disjoint hierarchy from it (`AttestError`,
    `RatlsError`, `LoaderError`): catching one never catches another."""

    stage = "error"

    def __init__(
        self,
        message: str,
        *,
        check: str | None = None,
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        self.check = check
        self.expected = expected
        self.actual = actual
        shown = [
            f"{label} {show(value)}"
            for label, value in (("expected", expected), ("actual", actual))
            if value is not None
        ]
        super().__init__(f"{message} ({', '.join(shown)})" if shown else message)

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of CLI output, API errors and logs: stage, type, message, ..."""
        return error_dict(self, self.stage)


def error_dict(error: Exception, stage: str) -> dict[str, Any]:
    """stage, type, message, and check/expected/actual where the error has them."""
    out: dict[str, Any] = {"stage": stage, "type": type(error).__name__, "message": str(error)}
    for field in ("check", "expected", "actual"):
        value = getattr(error, field, None)
        if value is not None:
            out[field] = value if field == "check" else show(value)
    return out


def show(value: Any) -> str:
    """How expected/actual values appear in messages: bytes in hex, sequences in brackets."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)
