"""Shared pieces of the RA-TLS integration tests: the fixed time, names, identity sources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from attest.collateral import Collateral
from attest.quote import Quote
from ratls.collateral import CollateralSource
from ratls.issuer import Identity
from ratls.profile import SubjectNames

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
NAMES = SubjectNames.parse(["localhost", "127.0.0.1"])


@dataclass
class FixedSource:
    """An identity source that always presents one (possibly bad) identity."""

    identity: Identity

    def current(self) -> Identity:
        return self.identity


class CountingCollateral:
    """A collateral source that counts lookups: one per full verification."""

    def __init__(self, inner: CollateralSource) -> None:
        self.inner, self.calls = inner, 0

    def collateral_for(self, quote: Quote, *, now: datetime) -> Collateral:
        self.calls += 1
        return self.inner.collateral_for(quote, now=now)
