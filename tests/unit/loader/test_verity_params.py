"""VerityParams refuses impossible parameters; TreeGeometry matches veritysetup's layout."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

import pytest

from loader.errors import VerityParamsError
from loader.verity import VerityParams
from loader.verity.params import hash_constructor


def test_defaults_are_veritysetups() -> None:
    params = VerityParams(data_blocks=1)
    assert (params.hash_algorithm, params.hash_format) == ("sha256", 1)
    assert (params.data_block_size, params.hash_block_size) == (4096, 4096)
    assert (params.hash_offset, params.superblock) == (0, True)


def test_geometry_of_16385_blocks() -> None:
    # Fact sheet §3.3: level sizes [129, 2, 1]; block 1 = top, 2-3 = level 1, 4-132 = level 0.
    geometry = VerityParams(data_blocks=16385).geometry
    assert geometry.level_blocks == (129, 2, 1)
    assert geometry.level_start_blocks == (4, 2, 1)
    assert geometry.tree_offset == 4096
    assert geometry.tree_end == 133 * 4096


@pytest.mark.parametrize(
    ("fields", "start_block"),
    [
        ({}, 1),
        ({"hash_offset": 8192}, 3),
        ({"hash_offset": 512}, 1),
        ({"hash_offset": 3584}, 1),  # 3584 + 512 = 4096: the tree follows directly
        ({"hash_offset": 4096, "superblock": False}, 1),
        ({"hash_block_size": 512, "data_block_size": 512}, 1),
        ({"superblock": False}, 0),
    ],
)
def test_tree_start(fields: dict, start_block: int) -> None:
    assert VerityParams(data_blocks=10, **fields).geometry.tree_start_block == start_block


@pytest.mark.parametrize(
    ("algorithm", "hash_format", "hbs", "slot", "per_block"),
    [
        ("sha256", 1, 4096, 32, 128),
        ("sha1", 1, 4096, 32, 128),
        ("sha1", 0, 4096, 20, 128),
        ("sha224", 1, 512, 32, 16),
        ("sha384", 1, 4096, 64, 64),
        ("sha384", 0, 4096, 48, 64),
        ("sha512", 1, 512, 64, 8),
    ],
)
def test_digest_slots(
    algorithm: str, hash_format: int, hbs: int, slot: int, per_block: int
) -> None:
    geometry = VerityParams(
        data_blocks=5, hash_algorithm=algorithm, hash_format=hash_format, hash_block_size=hbs
    ).geometry
    assert (geometry.slot_size, geometry.hashes_per_block) == (slot, per_block)


def test_one_data_block_has_no_tree() -> None:
    assert VerityParams(data_blocks=1).geometry.levels == 0
    assert VerityParams(data_blocks=2).geometry.levels == 1
    assert VerityParams(data_blocks=129).geometry.levels == 2


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"data_blocks": 0}, "data_blocks"),
        ({"data_blocks": -1}, "data_blocks"),
        ({"data_blocks": True}, "data_blocks"),
        ({"data_blocks": 1.0}, "data_blocks"),
        ({"data_blocks": 1 << 63}, "data_blocks"),
        ({"hash_format": 2}, "hash_format"),
        ({"data_block_size": 256}, "data_block_size"),
        ({"data_block_size": 3000}, "data_block_size"),
        ({"data_block_size": 1 << 20}, "data_block_size"),
        ({"hash_block_size": 4097}, "hash_block_size"),
        ({"salt": bytes(257)}, "salt"),
        ({"salt": "00"}, "salt"),
        ({"hash_offset": -512}, "hash_offset"),
        ({"hash_offset": 100}, "hash_offset"),
        ({"hash_offset": 4608, "superblock": False}, "hash_offset"),
        ({"hash_algorithm": "SHA256"}, "hash_algorithm"),
        ({"hash_algorithm": "sha256\0"}, "hash_algorithm"),
        ({"hash_algorithm": "no-such-hash"}, "hash_algorithm"),
        ({"hash_algorithm": "shake128"}, "hash_algorithm"),
        ({"hash_algorithm": "x" * 32}, "hash_algorithm"),
        ({"superblock": False, "uuid": UUID(int=1)}, "uuid"),
        ({"superblock": 1}, "superblock"),
    ],
)
def test_invalid_parameters_are_refused(fields: dict, check: str) -> None:
    with pytest.raises(VerityParamsError) as caught:
        VerityParams(**{"data_blocks": 10, **fields})
    assert caught.value.check == check


def test_replace_revalidates() -> None:
    params = VerityParams(data_blocks=10)
    with pytest.raises(VerityParamsError):
        replace(params, data_block_size=1000)


@pytest.mark.parametrize(
    ("kernel_name", "digest_size"),
    [("sha256", 32), ("sha1", 20), ("sha3-256", 32), ("blake2b-512", 64), ("blake2s-256", 32)],
)
def test_kernel_names_map_to_hashlib(kernel_name: str, digest_size: int) -> None:
    assert hash_constructor(kernel_name)().digest_size == digest_size
