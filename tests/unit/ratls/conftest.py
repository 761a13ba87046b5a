"""Fixtures for ratls unit tests that need no DCAP evidence: a recording quote provider.

The provider stands in for TDX hardware (the only mocked edge): it records the REPORTDATA it is
asked for and returns bytes that carry it, so tests can see what the issuer bound.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support.clock import ManualClock

from ratls.profile import SubjectNames

START = datetime(2026, 3, 1, 12, 34, 56, 789000, tzinfo=UTC)


class RecordingProvider:
    tee = "simulated"

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.fail_with: Exception | None = None

    def get_quote(self, report_data: bytes) -> bytes:
        if self.fail_with is not None:
            raise self.fail_with
        self.requests.append(report_data)
        return b"QUOTE:" + report_data


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
def names() -> SubjectNames:
    return SubjectNames.parse(["appliance.test", "127.0.0.1", "::1"])
