"""Lifecycle settings (loader.settings): bounds checked at construction, backoff schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader.settings import HealthSettings, LoaderSettings, RestartPolicy


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(
    initial=st.floats(0.01, 10), multiplier=st.floats(1, 4), cap=st.floats(0.01, 100),
    attempt=st.integers(1, 50),
)
def test_backoff_is_bounded_and_never_shrinks(
    initial: float, multiplier: float, cap: float, attempt: int
) -> None:
    policy = RestartPolicy(initial_backoff=initial, multiplier=multiplier, max_backoff=cap)
    assert 0 < policy.backoff(attempt) <= cap
    assert policy.backoff(attempt + 1) >= policy.backoff(attempt)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RestartPolicy(max_restarts=-1),
        lambda: RestartPolicy(multiplier=0.5),
        lambda: RestartPolicy(initial_backoff=0),
        lambda: HealthSettings(startup_timeout=0),
        lambda: HealthSettings(failure_threshold=0),
        lambda: LoaderSettings(Path("m"), Path("r"), Path("w"), Path("s"), stop_grace=-1),
    ],
)
def test_bad_values_fail_at_construction(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be"):
        make()


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        RestartPolicy().backoff(0)
