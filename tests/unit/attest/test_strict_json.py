"""The strict JSON reading of collateral: exact member texts, duplicate keys, types, hex, times."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.errors import CollateralFormatError
from attest.strict_json import (
    MAX_DOCUMENT_SIZE,
    decode_utf8,
    format_utc_time,
    hex_bytes,
    hex_member,
    load_json,
    member_texts,
    typed_member,
    uint_member,
    utc_time_member,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
layouts = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])


@given(st.dictionaries(st.text(), json_values, max_size=4), layouts)
def test_member_texts_are_the_exact_source_of_each_value(members: dict, layout) -> None:
    item_separator, key_separator = layout
    body = json.dumps(members, separators=(item_separator, key_separator))
    texts = member_texts(body, "body")
    assert list(texts) == list(members)
    for key, text in texts.items():
        assert text in body
        assert json.loads(text) == members[key]


def test_member_texts_keep_the_value_byte_for_byte() -> None:
    signed = '{"id" :"TDX",  "levels":[ 1,2 ]}'
    body = f'\n {{  "signature" : "00" ,\n\t"tcbInfo":{signed}\n}}\n'
    assert member_texts(body, "body") == {"signature": '"00"', "tcbInfo": signed}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('["a"]', "not a JSON object"),
        ('{"a":1,"a":2}', "duplicate member"),
        ('{"a":1,}', "trailing comma"),
        ('{"a":1} x', "data after the JSON object"),
        ('{"a" 1}', "expected ':'"),
        ('{"a":1 "b":2}', "expected ',' or '}'"),
        ("{a:1}", "expected a member name"),
        ('{"a":{,}}', "invalid JSON"),
    ],
)
def test_member_texts_refuse_what_is_not_one_plain_object(body: str, reason: str) -> None:
    with pytest.raises(CollateralFormatError, match=reason) as caught:
        member_texts(body, "tcb_info_body")
    assert caught.value.check == "tcb_info_body"


def test_load_json_refuses_duplicate_keys_at_any_depth_and_oversized_text() -> None:
    with pytest.raises(CollateralFormatError, match="duplicate JSON key") as caught:
        load_json('{"a": {"b": 1, "b": 2}}', "doc")
    assert caught.value.actual == "b"
    with pytest.raises(CollateralFormatError, match="too large"):
        load_json(" " * (MAX_DOCUMENT_SIZE + 1), "doc")
    with pytest.raises(CollateralFormatError, match="must be JSON text"):
        load_json(b"{}", "doc")  # type: ignore[arg-type]
    with pytest.raises(CollateralFormatError, match="not valid JSON"):
        load_json("{", "doc")


def test_decode_utf8() -> None:
    assert decode_utf8("é", "x") == "é"
    assert decode_utf8("é".encode(), "x") == "é"
    with pytest.raises(CollateralFormatError, match="not UTF-8"):
        decode_utf8(b"\xff", "x")


def test_typed_member_never_takes_a_boolean_for_an_int() -> None:
    assert typed_member({"version": 3}, "version", int, "tcbInfo") == 3
    for value in (True, "3", 3.0):
        with pytest.raises(CollateralFormatError, match="wrong type") as caught:
            typed_member({"version": value}, "version", int, "tcbInfo")
        assert caught.value.check == "tcbInfo.version"
    with pytest.raises(CollateralFormatError, match="missing"):
        typed_member({}, "version", int, "tcbInfo")


def test_uint_member_bounds() -> None:
    assert uint_member({"svn": 255}, "svn", "level", 0xFF) == 255
    for value in (-1, 256):
        with pytest.raises(CollateralFormatError, match="out of range"):
            uint_member({"svn": value}, "svn", "level", 0xFF)


def test_hex_bytes_takes_either_case() -> None:
    assert hex_bytes("00aBfF", "x") == b"\x00\xab\xff"
    assert hex_bytes("", "x") == b""


@pytest.mark.parametrize("text", ["0", "0g", "00 11", "0x00", "zz"])
def test_hex_bytes_takes_whole_bytes_of_hex_digits_only(text: str) -> None:
    with pytest.raises(CollateralFormatError, match="not hex"):
        hex_bytes(text, "x")


def test_hex_member_checks_the_size() -> None:
    assert hex_member({"fmspc": "90C06F000000"}, "fmspc", "tcbInfo", 6) == bytes.fromhex(
        "90c06f000000"
    )
    with pytest.raises(CollateralFormatError, match="wrong size"):
        hex_member({"fmspc": "90C06F00"}, "fmspc", "tcbInfo", 6)


@pytest.mark.parametrize(
    "text", ["2025-06-19T10:16:03", "2025-06-19", "2025-02-30T00:00:00Z", " 2025-06-19T10:16:03Z"]
)
def test_utc_time_member_takes_only_valid_utc_times(text: str) -> None:
    with pytest.raises(CollateralFormatError):
        utc_time_member({"issueDate": text}, "issueDate", "tcbInfo")


def test_utc_time_round_trip() -> None:
    moment = utc_time_member({"t": "2025-06-19T10:16:03Z"}, "t", "doc")
    assert moment == datetime(2025, 6, 19, 10, 16, 3, tzinfo=UTC)
    assert format_utc_time(moment) == "2025-06-19T10:16:03Z"
