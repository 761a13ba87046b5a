"""Appraisal policies that pin the simulated TD's measurements, as a tenant's policy would.

`attest.simulated.SimulatedTd()` is deterministic (its MRTD and RTMR0-2 are fixed tags), so a
test pins the values a tenant would have pinned from the image's reference values.
"""

from __future__ import annotations

from typing import Any

from attest.simulated.platform import SimulatedTd
from ratls.policy import AppraisalPolicy


def simulated_td_pins(td: SimulatedTd | None = None) -> dict[str, list[str]]:
    td = td or SimulatedTd()
    return {
        "mr_td": [td.mr_td.hex()],
        **{f"rtmr{index}": [td.initial_rtmrs[index].hex()] for index in range(3)},
    }


def simulated_td_policy(**document: Any) -> AppraisalPolicy:
    """A policy pinning the simulated TD, plus `document`'s keys (which win)."""
    return AppraisalPolicy.from_document({**simulated_td_pins(), **document})
