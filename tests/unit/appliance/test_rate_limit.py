"""The token bucket of /v1/attestation, on a clock the test moves."""

from __future__ import annotations

import pytest

from appliance.worker.rate_limit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [None, None, None]
    assert bucket.take() == pytest.approx(0.5)  # one token every 1/rate seconds
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(0.5)


def test_an_idle_bucket_refills_to_the_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.take() for _ in range(3)][:2] == [None, None]
    assert bucket.take() is not None
