"""The quote-provider interface: 64 bytes of REPORTDATA in, one raw quote out."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from attest.errors import ProviderError
from attest.quote import REPORT_DATA_SIZE

TeeName = Literal["tdx", "simulated"]


@runtime_checkable
class QuoteProvider(Protocol):
    """Produces quotes of the trust domain this process runs in (or of a simulated one).

    `tee` is "tdx" for hardware evidence and "simulated" for evidence that only verifies against
    a simulated root the verifier passes explicitly.
    """

    @property
    def tee(self) -> TeeName: ...

    def get_quote(self, report_data: bytes) -> bytes:
        """Return a raw quote whose REPORTDATA is `report_data` (exactly 64 bytes)."""
        ...


def require_report_data(report_data: bytes) -> bytes:
    """Return `report_data` as bytes, or raise if it is not exactly 64 bytes.

    A short REPORTDATA would be zero-padded by some interfaces and so bind less than the caller
    thinks; refuse it rather than pad it.
    """
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise ProviderError(
            "REPORTDATA must be bytes",
            check="report_data type",
            expected="bytes",
            actual=type(report_data).__name__,
        )
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise ProviderError(
            "REPORTDATA must be exactly 64 bytes",
            check="report_data length",
            expected=REPORT_DATA_SIZE,
            actual=len(data),
        )
    return data
