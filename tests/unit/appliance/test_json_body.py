"""The routing fields of an inference body: the same answer whether a body is parsed with `json` on
the event loop (small bodies) or scanned by SQLite's JSON functions in a thread (large ones), and a
large body never parsed on the loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import ApiError, BadRequest
from appliance.worker import json_body
from appliance.worker.json_body import (
    OFF_LOOP_BYTES,
    RoutingFields,
    parse_json_object,
    read_routing_fields,
    routing_fields,
    scan_routing_fields,
)

pytestmark = pytest.mark.anyio


def outcome(parse, body: bytes) -> RoutingFields | tuple[str, str | None, str]:
    try:
        return parse(body)
    except ApiError as error:
        return error.code, error.param, error.message


def both(body: bytes):
    return outcome(routing_fields, body), outcome(scan_routing_fields, body)


@pytest.mark.parametrize("body, expected", [
    (b'{"model": "tiny"}', RoutingFields("tiny", False)),
    (b'{"model": "tiny", "stream": true}', RoutingFields("tiny", True)),
    (b'{"model": "tiny", "stream": null}', RoutingFields("tiny", False)),
    (b'{"messages": [{"model": "nested"}], "model": "tiny", "x": {"stream": 1}}',
     RoutingFields("tiny", False)),
    # Duplicate keys: the last one counts, as in `json` (and so in the engine).
    (b'{"model": "first", "model": "tiny", "stream": false, "stream": true}',
     RoutingFields("tiny", True)),
    # Escapes in keys and values are decoded before the comparison.
    (b'{"mod\\u0065l": "ti\\u006ey\\ud83d\\ude00"}', RoutingFields("tiny\U0001f600", False)),
    (b'{"model": "\\ud800"}', RoutingFields("\ud800", False)),
    (b' \t\r\n{"model": "tiny"}\n', RoutingFields("tiny", False)),
    (b'{"model": "tiny"}\x00', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "tiny", "t": NaN}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "tiny", "t": -Infinity}',
     ("invalid_json", None, "the request body is not valid JSON")),
    (b'\xef\xbb\xbf{"model": "tiny"}',
     ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "t\xff"}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "t\xed\xa0\x80"}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "tiny",}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "tiny"} {}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": "t\x01"}', ("invalid_json", None, "the request body is not valid JSON")),
    (b'{"model": 01}', ("invalid_json", None, "the request body is not valid JSON")),
    (b"", ("invalid_json", None, "the request body is not valid JSON")),
    (b"[1]", ("invalid_json", None, "the request body must be a JSON object, got list")),
    (b'"x"', ("invalid_json", None, "the request body must be a JSON object, got str")),
    (b"null", ("invalid_json", None, "the request body must be a JSON object, got NoneType")),
    (b"1.5", ("invalid_json", None, "the request body must be a JSON object, got float")),
    (b'{"stream": true}',
     ("missing_model", "model", "`model` is required and must be a non-empty string")),
    (b'{"model": ""}',
     ("missing_model", "model", "`model` is required and must be a non-empty string")),
    (b'{"model": ["tiny"]}',
     ("missing_model", "model", "`model` is required and must be a non-empty string")),
    (b'{"model": "tiny", "stream": "yes"}',
     ("invalid_type", "stream", "`stream` must be a boolean, got str")),
    (b'{"model": "tiny", "stream": 1}',
     ("invalid_type", "stream", "`stream` must be a boolean, got int")),
    (b'{"model": "tiny", "stream": 1.0}',
     ("invalid_type", "stream", "`stream` must be a boolean, got float")),
    (b'{"model": "tiny", "stream": {}}',
     ("invalid_type", "stream", "`stream` must be a boolean, got dict")),
])
def test_both_paths_read_the_same_fields(body: bytes, expected) -> None:
    assert both(body) == (expected, expected)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["model", "stream", "x", "messages"]) | st.text(max_size=5),
                      children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.sampled_from([None, {}, {"indent": 1}, {"ensure_ascii": False}]))
def test_both_paths_agree_on_any_json(document, formatting) -> None:
    if formatting is None:
        document = {"model": document, "stream": document} if document is not None else document
        formatting = {}
    body = json.dumps(document, **formatting).encode()
    inline, scanned = both(body)
    assert inline == scanned


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='{}[]",:0123456789.eE+- \t\nabtrufnl\\u',
                                        max_size=40).map(str.encode))
def test_both_paths_agree_on_arbitrary_bytes(body: bytes) -> None:
    inline, scanned = both(body)
    assert inline == scanned


@pytest.mark.parametrize("body", [
    b"[" * 1000 + b"]" * 1000,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b'{"model": "tiny", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
])
def test_deep_nesting_is_a_bad_request_on_either_path(body: bytes) -> None:
    # `json` stops at Python's recursion limit and SQLite at 2000 levels: a 400 either way (never
    # a RecursionError's 500), though SQLite may then see a valid object without `model`.
    for parse in (routing_fields, scan_routing_fields, parse_json_object):
        with pytest.raises(BadRequest):
            parse(body)


async def test_a_large_body_is_scanned_in_a_thread_and_never_parsed_on_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    inline_calls: list[int] = []
    scan_threads: list[int] = []

    def inline_spy(body: bytes) -> RoutingFields:
        inline_calls.append(len(body))
        return routing_fields(body)

    def scan_spy(body: bytes) -> RoutingFields:
        scan_threads.append(threading.get_ident())
        return scan_routing_fields(body)

    monkeypatch.setattr(json_body, "routing_fields", inline_spy)
    monkeypatch.setattr(json_body, "scan_routing_fields", scan_spy)
    large = b'{"model": "tiny", "x": [' + b"0," * OFF_LOOP_BYTES + b'0], "stream": true}'
    assert await read_routing_fields(large) == RoutingFields("tiny", True)
    assert inline_calls == [] and len(scan_threads) == 1 and scan_threads[0] != loop_thread
    small = b'{"model": "tiny"}'
    assert await read_routing_fields(small) == RoutingFields("tiny", False)
    assert inline_calls == [len(small)] and len(scan_threads) == 1
    with pytest.raises(BadRequest):
        await read_routing_fields(b"{" + b" " * OFF_LOOP_BYTES)


async def test_a_large_body_leaves_the_loop_free() -> None:
    # 4 MiB of empty arrays: `json.loads` holds the loop (and the GIL) for ~250 ms on it.
    body = b'{"model": "tiny", "x": [' + b"[]," * (4 * 1024 * 1024 // 3 - 20) + b"[]]}"
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    assert await read_routing_fields(body) == RoutingFields("tiny", False)
    done.set()
    await ticking
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps) * 1000:.0f} ms"
