"""The verity superblock: round trip, strict parsing, and comparison with pinned parameters."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

import pytest

from loader.errors import ParameterMismatchError, SuperblockError, VerityParamsError
from loader.verity import VerityParams, build_superblock, check_superblock, parse_superblock

PARAMS = VerityParams(
    data_blocks=1234,
    hash_algorithm="sha512",
    hash_format=0,
    data_block_size=1024,
    hash_block_size=2048,
    salt=b"\x01\x02\x03",
    hash_offset=8192,
    uuid=UUID("a3bb189e-8bf9-4888-9912-ace4e6543002"),
)


def test_round_trip() -> None:
    raw = build_superblock(PARAMS)
    assert len(raw) == 512
    assert raw[:8] == b"verity\0\0"
    assert parse_superblock(raw).to_params(8192) == PARAMS
    check_superblock(parse_superblock(raw), PARAMS)


def test_building_needs_a_uuid() -> None:
    with pytest.raises(VerityParamsError):
        build_superblock(replace(PARAMS, uuid=None))


def test_truncated() -> None:
    with pytest.raises(SuperblockError) as caught:
        parse_superblock(build_superblock(PARAMS)[:511])
    assert caught.value.check == "superblock_size"


def test_salt_size_over_256() -> None:
    raw = bytearray(build_superblock(PARAMS))
    raw[80:82] = (257).to_bytes(2, "little")
    with pytest.raises(SuperblockError) as caught:
        parse_superblock(bytes(raw))
    assert caught.value.check == "salt_size"


def test_non_ascii_algorithm() -> None:
    raw = bytearray(build_superblock(PARAMS))
    raw[32] = 0xE9
    with pytest.raises(SuperblockError):
        parse_superblock(bytes(raw))


def test_values_that_no_device_can_have_are_a_superblock_error() -> None:
    raw = bytearray(build_superblock(PARAMS))
    raw[64:68] = (1000).to_bytes(4, "little")  # not a power of two
    superblock = parse_superblock(bytes(raw))
    with pytest.raises(SuperblockError, match="invalid parameters"):
        superblock.to_params(8192)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hash_format", 1),
        ("hash_algorithm", "sha256"),
        ("data_block_size", 4096),
        ("hash_block_size", 4096),
        ("data_blocks", 1235),
        ("salt", b""),
        ("uuid", UUID(int=5)),
    ],
)
def test_each_pinned_field_is_compared(field: str, value: object) -> None:
    superblock = parse_superblock(build_superblock(PARAMS))
    with pytest.raises(ParameterMismatchError) as caught:
        check_superblock(superblock, replace(PARAMS, **{field: value}))
    assert caught.value.check == field


def test_unpinned_uuid_is_not_compared() -> None:
    check_superblock(parse_superblock(build_superblock(PARAMS)), replace(PARAMS, uuid=None))
