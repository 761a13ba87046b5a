"""Fixtures for ratls unit tests: the simulated TD's quote provider, recording what it is asked.

The simulated authority stands in for TDX hardware (the only mocked edge); the recording wrapper
lets tests see which REPORTDATA the issuer bound, and make the provider fail.

Test modules take these fixtures with `from support.ratls_unit_fixtures import *`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider
from ratls.profile import SubjectNames
from support.clock import ManualClock

START = datetime(2026, 3, 1, 12, 34, 56, 789000, tzinfo=UTC)


__all__ = ["clock", "names", "provider", "sim_authority"]


class RecordingProvider:
    """A simulated TD's provider that records REPORTDATA requests and can be made to fail."""

    tee = "simulated"

    def __init__(self, inner: SimulatedQuoteProvider) -> None:
        self.inner = inner
        self.requests: list[bytes] = []
        self.fail_with: Exception | None = None

    def get_quote(self, report_data: bytes) -> bytes:
        if self.fail_with is not None:
            raise self.fail_with
        self.requests.append(report_data)
        return self.inner.get_quote(report_data)


@pytest.fixture(scope="session")
def sim_authority(tmp_path_factory) -> SimulatedAuthority:
    return SimulatedAuthority.create(tmp_path_factory.mktemp("sim") / "authority", now=START)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def provider(sim_authority) -> RecordingProvider:
    return RecordingProvider(SimulatedQuoteProvider(sim_authority))


@pytest.fixture
def names() -> SubjectNames:
    return SubjectNames.parse(["appliance.test", "127.0.0.1", "::1"])
