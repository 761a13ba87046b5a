"""A quote provider for a simulated trust domain, with in-memory RTMRs."""

from __future__ import annotations

from attest.providers.base import TeeName, require_report_data
from attest.rtmr import InMemoryRtmrs
from attest.simulated.authority import SimulatedAuthority
from attest.simulated.platform import SimulatedTd
from attest.simulated.quote import build_quote


class SimulatedQuoteProvider:
    """`QuoteProvider` and `RtmrExtender` of a simulated TD.

    Its quotes verify only against the authority's root, which a verifier must be given
    explicitly; `tee` says "simulated" so that nothing downstream mistakes them for hardware
    evidence. Extending an RTMR changes every later quote, like TDG.MR.RTMR.EXTEND does.
    """

    def __init__(self, authority: SimulatedAuthority, td: SimulatedTd | None = None) -> None:
        self.authority = authority
        self.td = td or SimulatedTd()
        self._rtmrs = InMemoryRtmrs(self.td.initial_rtmrs)

    @property
    def tee(self) -> TeeName:
        return "simulated"

    def get_quote(self, report_data: bytes) -> bytes:
        return build_quote(
            self.authority, self.td, self._rtmrs.values(), require_report_data(report_data)
        )

    def extend(self, index: int, digest: bytes) -> None:
        self._rtmrs.extend(index, digest)

    def rtmrs(self) -> tuple[bytes, ...]:
        return self._rtmrs.values()
