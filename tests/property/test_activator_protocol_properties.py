"""The activator's wire protocol (loader.activator.protocol) under arbitrary input.

Whatever a local process sends, the parser returns a valid request or raises
ActivatorProtocolError, nothing else; valid requests survive encode -> parse unchanged; and every
error the activator sends is rebuilt on the client as the same class with the same fields.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from loader.activator.protocol import (
    MAX_REQUEST_BYTES,
    ActivatorRequest,
    encode,
    error_answer,
    parse_answer,
    parse_request,
    read_line,
    rebuild_error,
)
from loader.errors import (
    ActivationError,
    ActivatorError,
    ActivatorProtocolError,
    ExpectedDigestMismatchError,
    LoaderError,
    ModelNameError,
    ModelNotActiveError,
    ParameterMismatchError,
    RecordError,
)

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
DIGESTS = st.sampled_from([20, 32, 48, 64]).flatmap(
    lambda size: st.binary(min_size=size, max_size=size).map(bytes.hex)
)
REQUESTS = st.one_of(
    st.just(ActivatorRequest(op="status")),
    st.builds(
        ActivatorRequest,
        op=st.sampled_from(["activate", "deactivate"]),
        model=NAMES,
        digest=DIGESTS,
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(REQUESTS)
def test_valid_requests_round_trip(request: ActivatorRequest) -> None:
    line = encode(request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(line) <= MAX_REQUEST_BYTES
    assert parse_request(line[:-1]) == request


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_the_protocol_error(raw: bytes) -> None:
    try:
        request = parse_request(raw)
    except ActivatorProtocolError:
        return
    assert request.op in ("activate", "deactivate", "status")


@given(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["activate", "deactivate", "status", "open"])},
        optional={"model": JSON_VALUES | NAMES, "digest": JSON_VALUES | DIGESTS, "x": JSON_VALUES},
    )
)
def test_any_json_object_parses_or_raises_the_protocol_error(document: dict) -> None:
    try:
        request = parse_request(json.dumps(document).encode())
    except ActivatorProtocolError:
        return
    # What was accepted is exactly what the schema allows.
    assert set(document) <= {"op", "model", "digest"}
    if request.op == "status":
        assert request.model is None and request.digest is None
    else:
        assert request.model == document["model"] and request.digest == document["digest"]


@pytest.mark.parametrize(
    "error",
    [
        ExpectedDigestMismatchError(
            "pinned elsewhere", check="expected digest", expected="ab", actual="cd"
        ),
        ParameterMismatchError("size", check="image_size", expected=4096, actual=8192),
        RecordError("no trusted record", check="record", actual="/r/x.roothash"),
        ModelNameError("invalid model name", check="name"),
        ModelNotActiveError("not active", check="active"),
        ActivationError(
            "veritysetup open failed with exit status 1: no dm", check="veritysetup open"
        ),
        ActivatorProtocolError("request longer than 1024 bytes", check="request"),
    ],
)
def test_errors_cross_as_the_same_class_and_fields(error: LoaderError) -> None:
    answer = parse_answer(error_answer(error)[:-1])
    assert answer.error is not None
    rebuilt = rebuild_error(answer.error)
    assert type(rebuilt) is type(error)
    assert rebuilt.to_dict()["message"] == f"activator: {error}"
    for field in ("check", "expected", "actual"):
        assert rebuilt.to_dict().get(field) == error.to_dict().get(field)


def test_an_error_class_the_client_does_not_know_arrives_as_activator_error() -> None:
    answer = parse_answer(
        json.dumps({"ok": False, "error": {"type": "SystemExit", "message": "no"}}).encode()
    )
    assert answer.error is not None
    assert type(rebuild_error(answer.error)) is ActivatorError


@given(st.binary(min_size=0, max_size=2 * MAX_REQUEST_BYTES))
@example(b"x" * MAX_REQUEST_BYTES + b"\n")
@example(b"x" * MAX_REQUEST_BYTES + b"\ny")
@example(b"x" * (MAX_REQUEST_BYTES + 1) + b"\n")
@example(b"x\ny")
def test_read_line_returns_one_bounded_line_or_refuses(payload: bytes) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(payload)
        left.shutdown(socket.SHUT_WR)
        try:
            line = read_line(right, MAX_REQUEST_BYTES, "request")
        except ActivatorProtocolError:
            line = None
    newline = payload.find(b"\n")
    if newline < 0 or newline > MAX_REQUEST_BYTES:
        assert line is None  # too long, or cut off before its newline
    elif newline == len(payload) - 1:
        assert line == payload[:-1]
    elif newline == MAX_REQUEST_BYTES:
        # The first read ends at the newline, so what follows is never read (nor served).
        assert line == payload[:newline]
    else:
        assert line is None  # bytes after the line: one request per connection
