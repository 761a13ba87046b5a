"""Fixtures shared by the simulated-evidence tests: one authority and its quote per module."""

from __future__ import annotations

import pytest
from support.simulated_evidence import NOW, REPORT_DATA

from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> SimulatedAuthority:
    return SimulatedAuthority.create(tmp_path_factory.mktemp("sim") / "authority", now=NOW)


@pytest.fixture(scope="module")
def quote(authority) -> bytes:
    return SimulatedQuoteProvider(authority).get_quote(REPORT_DATA)
