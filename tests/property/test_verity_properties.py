"""Properties: the tree equals a tiny reference written from the spec; records and superblocks
round-trip; any single changed byte in the data or the hash area is detected."""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.errors import DataCorruptionError, RecordError, VerificationError
from loader.images.record import TrustedRecord, parse_record
from loader.verity import (
    VerityParams,
    build_superblock,
    compute_tree,
    format_hash,
    parse_superblock,
    verify,
)

ALGORITHMS = {
    "sha256": "sha256",
    "sha1": "sha1",
    "sha512": "sha512",
    "sha384": "sha384",
    "sha3-256": "sha3_256",
}
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reference_tree(data: bytes, algorithm: str, fmt: int, dbs: int, hbs: int, salt: bytes):
    """dm-verity from its description (docs/verity.md §3), as plainly as possible."""

    def h(block: bytes) -> bytes:
        message = salt + block if fmt == 1 else block + salt
        return hashlib.new(ALGORITHMS[algorithm], message).digest()

    size = len(h(b""))
    slot = size if fmt == 0 else 1 << (size - 1).bit_length()
    per_block = 1
    while per_block * 2 <= hbs // size:
        per_block *= 2
    digests = [h(data[i : i + dbs]) for i in range(0, len(data) // dbs * dbs, dbs)]
    if len(digests) == 1:
        return digests[0], []
    levels = []
    while True:
        blocks = [
            b"".join(d + bytes(slot - size) for d in digests[i : i + per_block]).ljust(hbs, b"\0")
            for i in range(0, len(digests), per_block)
        ]
        levels.append(b"".join(blocks))
        if len(blocks) == 1:
            return h(blocks[0]), levels
        digests = [h(block) for block in blocks]


@st.composite
def tree_inputs(draw):
    dbs = draw(st.sampled_from([512, 1024, 2048]))
    hbs = draw(st.sampled_from([512, 1024, 4096]))
    blocks = draw(st.integers(min_value=1, max_value=300))
    tail = draw(st.integers(min_value=0, max_value=dbs - 1))
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(blocks * dbs + tail)
    return {
        "data": data,
        "algorithm": draw(st.sampled_from(sorted(ALGORITHMS))),
        "fmt": draw(st.sampled_from([0, 1])),
        "dbs": dbs,
        "hbs": hbs,
        "salt": draw(st.binary(max_size=64)),
    }


@PROPERTY_SETTINGS
@given(tree_inputs())
def test_tree_matches_the_reference(case: dict) -> None:
    params = VerityParams(
        data_blocks=len(case["data"]) // case["dbs"],
        hash_algorithm=case["algorithm"],
        hash_format=case["fmt"],
        data_block_size=case["dbs"],
        hash_block_size=case["hbs"],
        salt=case["salt"],
        superblock=False,
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "data")
        path.write_bytes(case["data"])
        tree = compute_tree(path, params)
    root, levels = reference_tree(
        case["data"], case["algorithm"], case["fmt"], case["dbs"], case["hbs"], case["salt"]
    )
    assert tree.root_hash == root
    assert list(tree.levels) == levels


@st.composite
def verity_params(draw, superblock: bool | None = None):
    algorithm = draw(st.sampled_from(sorted(ALGORITHMS)))
    hbs = draw(st.sampled_from([512, 1024, 4096, 65536]))
    with_superblock = draw(st.booleans()) if superblock is None else superblock
    unit = 512 if with_superblock else hbs
    return VerityParams(
        data_blocks=draw(st.integers(min_value=1, max_value=10**9)),
        hash_algorithm=algorithm,
        hash_format=draw(st.sampled_from([0, 1])),
        data_block_size=draw(st.sampled_from([512, 4096, 524288])),
        hash_block_size=hbs,
        salt=draw(st.binary(max_size=256)),
        hash_offset=draw(st.integers(min_value=0, max_value=1 << 20)) * unit,
        superblock=with_superblock,
        uuid=UUID(bytes=draw(st.binary(min_size=16, max_size=16))) if with_superblock else None,
    )


@st.composite
def records(draw):
    params = draw(verity_params())
    return TrustedRecord(
        name=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)),
        root_hash=draw(st.binary(min_size=params.digest_size, max_size=params.digest_size)),
        params=params,
        filesystem=draw(st.sampled_from(["squashfs", "erofs"])),
        image_size=params.data_size,
        hash_size=params.geometry.tree_end + draw(st.integers(0, 4096)),
    )


@PROPERTY_SETTINGS
@given(records())
def test_record_round_trip(record: TrustedRecord) -> None:
    assert parse_record(record.to_json().encode()) == record


@PROPERTY_SETTINGS
@given(records(), st.data())
def test_record_without_any_one_key_is_refused(record: TrustedRecord, data: st.DataObject) -> None:
    document = json.loads(record.to_json())
    del document[data.draw(st.sampled_from(sorted(document)))]
    with pytest.raises(RecordError):
        parse_record(json.dumps(document).encode())


@PROPERTY_SETTINGS
@given(records(), st.data())
def test_record_with_any_value_of_the_wrong_type_is_refused(
    record: TrustedRecord, data: st.DataObject
) -> None:
    document = json.loads(record.to_json())
    key = data.draw(st.sampled_from(sorted(document)))
    replacement = data.draw(
        st.one_of(
            st.lists(st.integers(), max_size=1),
            st.dictionaries(st.text(), st.integers(), max_size=1),
            st.floats(allow_nan=False),
        )
    )
    document[key] = replacement
    with pytest.raises(RecordError):
        parse_record(json.dumps(document).encode())


@PROPERTY_SETTINGS
@given(verity_params(superblock=True))
def test_superblock_round_trip(params: VerityParams) -> None:
    assert parse_superblock(build_superblock(params)).to_params(params.hash_offset) == params


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("flip")
    params = VerityParams(
        data_blocks=200,
        data_block_size=512,
        hash_block_size=512,
        salt=b"\x07" * 32,
        hash_offset=1024,
        uuid=UUID(int=99),
    )
    data, hash_file = directory / "data", directory / "hash"
    data.write_bytes(random.Random(1).randbytes(params.data_size))
    hash_file.write_bytes(random.Random(2).randbytes(1024))  # unrelated bytes before the offset
    tree = format_hash(data, hash_file, params)
    return params, data.read_bytes(), hash_file.read_bytes(), tree.root_hash


@PROPERTY_SETTINGS
@given(st.data())
def test_any_changed_data_byte_is_found_at_its_block(small_image, data: st.DataObject) -> None:
    params, content, hash_bytes, root = small_image
    offset = data.draw(st.integers(0, len(content) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(content)
    changed[offset] ^= mask
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "data").write_bytes(changed)
        Path(directory, "hash").write_bytes(hash_bytes)
        with pytest.raises(DataCorruptionError) as caught:
            verify(Path(directory, "data"), Path(directory, "hash"), params, root)
    assert caught.value.block == offset // 512


@PROPERTY_SETTINGS
@given(st.data())
def test_any_changed_byte_of_the_hash_area_is_detected(small_image, data: st.DataObject) -> None:
    params, content, hash_bytes, root = small_image
    offset = data.draw(st.integers(params.hash_offset, params.geometry.tree_end - 1))
    changed = bytearray(hash_bytes)
    changed[offset] ^= data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "data").write_bytes(content)
        Path(directory, "hash").write_bytes(changed)
        with pytest.raises(VerificationError):
            verify(Path(directory, "data"), Path(directory, "hash"), params, root)
