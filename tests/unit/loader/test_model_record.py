"""The trusted record: a valid one parses; every malformation is a RecordError naming the field."""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from loader.errors import RecordError
from loader.images.record import TrustedRecord, parse_record
from loader.verity import VerityParams

ROOT = "4f" * 32
GOOD = {
    "format": "appliance-verity-record",
    "version": 1,
    "name": "tiny-llama",
    "root_hash": ROOT,
    "hash_algorithm": "sha256",
    "hash_format": 1,
    "data_block_size": 4096,
    "hash_block_size": 4096,
    "data_blocks": 25600,
    "salt": "ab" * 32,
    "hash_offset": 0,
    "superblock": True,
    "uuid": "0f0e0d0c-0b0a-4908-8706-050403020100",
    "filesystem": "squashfs",
    "image_size": 25600 * 4096,
    "hash_size": (1 + 200 + 2 + 1) * 4096,
}


def encode(document: dict) -> bytes:
    return json.dumps(document).encode()


def test_valid_record() -> None:
    record = parse_record(encode(GOOD))
    assert record.digest == ROOT
    assert record.params == VerityParams(
        data_blocks=25600, salt=bytes.fromhex("ab" * 32), uuid=UUID(GOOD["uuid"])
    )
    assert (record.filesystem, record.image_size, record.hash_size) == (
        "squashfs",
        GOOD["image_size"],
        GOOD["hash_size"],
    )


def test_serialised_record_parses_back() -> None:
    record = parse_record(encode(GOOD))
    assert parse_record(record.to_json().encode()) == record
    assert json.loads(record.to_json()) == GOOD


def test_record_without_superblock() -> None:
    document = {**GOOD, "superblock": False, "uuid": None, "hash_size": 204 * 4096}
    assert parse_record(encode(document)).params.superblock is False


def changed(**fields: object) -> dict:
    return {**GOOD, **fields}


def without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


MALFORMED = {
    "unknown key": (changed(comment="hi"), "comment"),
    "missing root": (without("root_hash"), "root_hash"),
    "missing sizes": (without("image_size"), "image_size"),
    "wrong format tag": (changed(format="verity"), "format"),
    "version 2": (changed(version=2), "version"),
    "version true": (changed(version=True), "version"),
    "version as string": (changed(version="1"), "version"),
    "bool as int": (changed(data_blocks=True), "data_blocks"),
    "float as int": (changed(data_block_size=4096.0), "data_block_size"),
    "string as int": (changed(hash_offset="0"), "hash_offset"),
    "upper-case root": (changed(root_hash=ROOT.upper()), "root_hash"),
    "short root": (changed(root_hash=ROOT[:-2]), "root_hash"),
    "odd-length root": (changed(root_hash=ROOT[:-1]), "root_hash"),
    "root for sha512": (changed(root_hash="4f" * 64), "root_hash"),
    "non-hex salt": (changed(salt="zz"), "salt"),
    "salt over 256 bytes": (changed(salt="00" * 257), "salt"),
    "non-canonical uuid": (changed(uuid="0F0E0D0C-0B0A-4908-8706-050403020100"), "uuid"),
    "uuid without dashes": (changed(uuid="0f0e0d0c0b0a49088706050403020100"), "uuid"),
    "superblock without uuid": (changed(uuid=None), "uuid"),
    "uuid without superblock": (changed(superblock=False), "uuid"),
    "unknown filesystem": (changed(filesystem="ext4"), "filesystem"),
    "image size not pinned to the data": (changed(image_size=GOOD["image_size"] + 1), "image_size"),
    "hash file smaller than the tree": (changed(hash_size=4096), "hash_size"),
    "bad block size": (changed(data_block_size=1000, image_size=25600 * 1000), "data_block_size"),
    "unknown algorithm": (changed(hash_algorithm="md6"), "hash_algorithm"),
    "misaligned offset": (changed(hash_offset=100), "hash_offset"),
    "invalid model name": (changed(name="../etc"), "name"),
    "zero data blocks": (changed(data_blocks=0, image_size=0), "data_blocks"),
}


@pytest.mark.parametrize(("document", "check"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_record(document: dict, check: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(encode(document))
    assert caught.value.check == check


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'"record"',
        b"\xff\xfe{}",
        encode(GOOD)[:-1],
        encode(GOOD).replace(b'"hash_offset": 0', b'"hash_offset": NaN'),
        encode(GOOD).replace(b'"version": 1', b'"version": 1, "version": 1'),
        b" " * 70_000,
    ],
    ids=["empty", "array", "string", "not utf-8", "truncated", "NaN", "duplicate key", "too large"],
)
def test_not_a_record(raw: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(raw)


def test_constructing_an_inconsistent_record_fails() -> None:
    params = VerityParams(data_blocks=10, uuid=UUID(int=1))
    with pytest.raises(RecordError):
        TrustedRecord("m", bytes(32), params, "squashfs", image_size=10 * 4096 + 1, hash_size=8192)
