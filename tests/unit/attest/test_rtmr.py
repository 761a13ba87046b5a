"""RTMR extension semantics, event log replay and JSON, and the in-memory registers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import FormatError, RtmrExtendError, VerificationError
from attest.rtmr import (
    ZERO_RTMR,
    InMemoryRtmrs,
    RtmrEvent,
    RtmrEventLog,
    extend_value,
    replay,
    verify_replay,
)

# openssl dgst -sha384 of 96 zero bytes: one extension of a zero RTMR with a zero digest.
ZERO_EXTENDED_BY_ZERO = bytes.fromhex(
    "f57bb7ed82c6ae4a29e6c9879338c592c7d42a39135583e8ccbe3940f2344b0e"
    "b6eb8503db0ffd6a39ddd00cd07d8317"
)

digests = st.binary(min_size=48, max_size=48)
events = st.builds(
    RtmrEvent, index=st.integers(0, 3), digest=digests, event_type=st.sampled_from(["a", "b"])
)


def test_extension_matches_an_independent_sha384():
    assert extend_value(ZERO_RTMR, bytes(48)) == ZERO_EXTENDED_BY_ZERO


def test_replay_applies_events_to_their_register_in_order():
    first = RtmrEvent.from_data(3, "model-load", b"llama")
    second = RtmrEvent.from_data(3, "model-load", b"qwen")
    other = RtmrEvent.from_data(2, "config", b"x")

    values = replay([first, other, second])

    assert values[0] == values[1] == ZERO_RTMR
    assert values[2] == extend_value(ZERO_RTMR, other.digest)
    assert values[3] == extend_value(extend_value(ZERO_RTMR, first.digest), second.digest)
    assert replay([second, first])[3] != values[3]


def test_event_digest_binds_type_and_data():
    event = RtmrEvent.from_data(3, "model-load", b"weights")
    assert event.digest == hashlib.sha384(b"model-load\x00weights").digest()
    with pytest.raises(FormatError, match="does not match its data"):
        RtmrEvent(3, event.digest, "model-unload", data=b"weights")
    with pytest.raises(FormatError, match="does not match its data"):
        RtmrEvent(3, event.digest, "model-load", data=b"weightz")


@pytest.mark.parametrize(
    ("index", "digest", "check"),
    [
        (4, bytes(48), "event index"),
        (-1, bytes(48), "event index"),
        (3, bytes(47), "event digest length"),
    ],
)
def test_malformed_events_are_refused(index, digest, check):
    with pytest.raises(FormatError) as caught:
        RtmrEvent(index, digest, "t")
    assert caught.value.check == check


def test_verify_replay_names_the_register_and_both_values():
    log = [RtmrEvent.from_data(3, "model-load", b"a")]
    quoted = list(replay(log))
    verify_replay(log, quoted)

    quoted[3] = extend_value(quoted[3], bytes(48))
    with pytest.raises(VerificationError) as caught:
        verify_replay(log, quoted)
    assert caught.value.check == "rtmr3 replay"
    assert caught.value.expected == replay(log)[3]
    assert caught.value.actual == quoted[3]


def test_event_log_json_round_trip_and_tampering():
    log = RtmrEventLog(
        [RtmrEvent.from_data(3, "model-load", b"m", "model m"), RtmrEvent(2, bytes(48), "raw")]
    )
    again = RtmrEventLog.from_json(log.to_json())
    assert again.events == log.events
    assert again.replay() == log.replay()

    tampered = log.to_json().replace(b"m".hex(), b"n".hex())
    with pytest.raises(FormatError, match="does not match its data"):
        RtmrEventLog.from_json(tampered)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": 2, "events": []}',
        '{"version": 1, "events": [{"index": 3, "digest": "zz", "type": "t"}]}',
        '{"version": 1, "events": [], "extra": 1}',
    ],
)
def test_malformed_event_log_json_is_a_format_error(text):
    with pytest.raises(FormatError):
        RtmrEventLog.from_json(text)


class FailingExtender:
    def extend(self, index: int, digest: bytes) -> None:
        raise RtmrExtendError("device gone", check="test")


def test_measure_records_only_extensions_that_happened():
    registers = InMemoryRtmrs()
    log = RtmrEventLog()
    event = RtmrEvent.from_data(3, "model-load", b"m")

    log.measure(registers, event)
    with pytest.raises(RtmrExtendError):
        log.measure(FailingExtender(), RtmrEvent.from_data(3, "model-load", b"n"))

    assert log.events == (event,)
    assert registers.values() == log.replay()


@settings(max_examples=50, deadline=None)
@given(first=st.lists(events, max_size=6), second=st.lists(events, max_size=6))
def test_replay_of_a_log_continues_from_replay_of_its_prefix(first, second):
    assert replay(first + second) == replay(second, initial=replay(first))


@settings(max_examples=50, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from([2, 3]), digests), max_size=8))
def test_in_memory_registers_equal_the_replayed_log(steps):
    registers = InMemoryRtmrs()
    for index, digest in steps:
        registers.extend(index, digest)
    assert registers.values() == replay(RtmrEvent(i, d, "t") for i, d in steps)


@pytest.mark.parametrize(
    ("index", "digest"),
    [(0, bytes(48)), (1, bytes(48)), (4, bytes(48)), (3, bytes(49)), (True, bytes(48))],
)
def test_runtime_extension_is_limited_to_rtmr2_and_rtmr3_with_48_byte_digests(index, digest):
    registers = InMemoryRtmrs()
    with pytest.raises(RtmrExtendError):
        registers.extend(index, digest)
    assert registers.values() == (ZERO_RTMR,) * 4
