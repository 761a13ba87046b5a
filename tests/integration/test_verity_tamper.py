"""Tampering with data, tree and superblock: each is refused with its own error class.

veritysetup and libcryptsetup run on the same tampered files as references: they must reject
them too (and name the same data offset), except where noted.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import pytest
from verity_helpers import libcryptsetup_verify, veritysetup, veritysetup_verify, write_random

from loader.errors import (
    DataCorruptionError,
    HashTreeCorruptionError,
    ParameterMismatchError,
    RootHashMismatchError,
    SuperblockError,
    VerificationError,
    VerityParamsError,
)
from loader.verity import VerityParams, format_hash, verify
from loader.verity.tree import HashTree, tree_from_level0

SALT = bytes.fromhex("0011223344556677889900aabbccddeeff00112233445566778899aabbccddee")
UUID_FIXED = UUID("0b7d6f5e-4c3b-4a29-8817-263544536271")


class Image:
    """Data + hash file of 300 blocks of 512 bytes: three tree levels (19, 2 and 1 blocks)."""

    def __init__(self, root_dir: Path, params: VerityParams, seed: int = 11) -> None:
        self.params = params
        self.data = root_dir / "data.img"
        self.hash = root_dir / "data.verity"
        write_random(self.data, params.data_size, seed)
        self.tree: HashTree = format_hash(self.data, self.hash, params)
        self.root = self.tree.root_hash

    def flip(self, path: Path, offset: int, mask: int = 0x01) -> None:
        raw = bytearray(path.read_bytes())
        raw[offset] ^= mask
        path.write_bytes(bytes(raw))

    def verify(self, params: VerityParams | None = None, root: bytes | None = None) -> None:
        verify(self.data, self.hash, params or self.params, root or self.root)


@pytest.fixture
def image(tmp_path: Path) -> Image:
    params = VerityParams(
        data_blocks=300,
        data_block_size=512,
        hash_block_size=512,
        salt=SALT,
        uuid=UUID_FIXED,
    )
    made = Image(tmp_path, params)
    assert params.geometry.level_blocks == (19, 2, 1)
    return made


def test_untouched_image_verifies_with_all_three(image: Image) -> None:
    image.verify()
    assert veritysetup_verify(image.data, image.hash, image.params, image.root) == 0
    assert libcryptsetup_verify(image.data, image.hash, image.params, image.root) == 0


@pytest.mark.parametrize(
    "offset", [0, 511, 512, 300 * 512 - 1, *random.Random(5).sample(range(300 * 512), 12)]
)
def test_flipped_data_byte_names_the_block_and_offset(image: Image, offset: int) -> None:
    image.flip(image.data, offset)
    block = offset // 512
    with pytest.raises(DataCorruptionError) as caught:
        image.verify()
    assert (caught.value.block, caught.value.offset) == (block, block * 512)
    assert f"byte offset {block * 512}" in str(caught.value)
    reference = veritysetup("verify", image.data, image.hash, image.root.hex())
    assert reference.returncode == 2
    assert f"Verification failed at position {block * 512}." in reference.stderr
    assert libcryptsetup_verify(image.data, image.hash, image.params, image.root) == -1


def test_first_corrupted_block_is_reported(image: Image) -> None:
    image.flip(image.data, 250 * 512 + 3)
    image.flip(image.data, 40 * 512 + 9)
    with pytest.raises(DataCorruptionError) as caught:
        image.verify()
    assert caught.value.block == 40


@pytest.mark.parametrize("level", [0, 1, 2])
def test_flipped_tree_byte_in_each_level(image: Image, level: int) -> None:
    geometry = image.params.geometry
    block = geometry.level_blocks[level] - 1  # the last block of the level
    offset = geometry.level_offset(level) + block * 512 + 5  # inside its first digest
    image.flip(image.hash, offset)
    if level == geometry.levels - 1:
        # The top block is checked against the root itself: indistinguishable from a wrong root.
        with pytest.raises(RootHashMismatchError):
            image.verify()
    else:
        with pytest.raises(HashTreeCorruptionError) as caught:
            image.verify()
        assert caught.value.level == level
        assert caught.value.offset == geometry.level_offset(level) + block * 512
    assert veritysetup_verify(image.data, image.hash, image.params, image.root) != 0
    assert libcryptsetup_verify(image.data, image.hash, image.params, image.root) != 0


def test_non_zero_padding_in_a_consistent_tree_is_refused(image: Image) -> None:
    # A tree whose parents do cover non-zero padding (a broken or hostile producer): every digest
    # matches, yet dm-verity's format says spare bytes are zero, and veritysetup agrees.
    level0 = bytearray(image.tree.levels[0])
    used = 300 * 32  # 300 digests of 32 bytes; the last of 19 blocks has 4 free slots
    level0[used + 7] = 0x42
    odd = tree_from_level0(bytes(level0), image.params)
    image.hash.write_bytes(odd.hash_area())
    with pytest.raises(HashTreeCorruptionError, match="spare area") as caught:
        image.verify(root=odd.root_hash)
    assert caught.value.level == 0
    assert caught.value.offset == image.params.geometry.level_offset(0) + used + 7
    reference = veritysetup("verify", image.data, image.hash, odd.root_hash.hex())
    assert reference.returncode == 2
    assert "Spare area is not zeroed" in reference.stderr


def test_bytes_between_superblock_and_tree_must_be_zero(tmp_path: Path) -> None:
    params = VerityParams(data_blocks=200, salt=SALT, uuid=UUID_FIXED)  # tree at 4096
    made = Image(tmp_path, params)
    made.flip(made.hash, 1000)
    with pytest.raises(HashTreeCorruptionError, match="between the superblock") as caught:
        made.verify()
    assert caught.value.offset == 1000
    # veritysetup never reads this gap; we refuse what we would never have written.
    assert veritysetup_verify(made.data, made.hash, params, made.root) == 0


def test_wrong_root_hash(image: Image) -> None:
    wrong = bytes([image.root[0] ^ 1]) + image.root[1:]
    with pytest.raises(RootHashMismatchError) as caught:
        image.verify(root=wrong)
    assert caught.value.expected == wrong.hex()
    assert caught.value.actual == image.root.hex()
    assert veritysetup("verify", image.data, image.hash, wrong.hex()).returncode == 1
    assert libcryptsetup_verify(image.data, image.hash, image.params, wrong) == -14


def test_root_hash_of_the_wrong_length(image: Image) -> None:
    with pytest.raises(VerityParamsError, match="root hash length"):
        image.verify(root=image.root[:20])


# (field, offset of the flipped byte in struct verity_sb, mask, error class, check it names)
SUPERBLOCK_FIELDS = [
    ("signature", 0, 0x01, SuperblockError, "signature"),
    ("version", 8, 0x02, SuperblockError, "version"),
    ("hash_type", 12, 0x01, ParameterMismatchError, "hash_format"),
    ("uuid", 16, 0x80, ParameterMismatchError, "uuid"),
    ("algorithm", 32, 0x01, ParameterMismatchError, "hash_algorithm"),
    ("algorithm_padding", 40, 0x01, SuperblockError, "algorithm"),
    ("data_block_size", 65, 0x04, ParameterMismatchError, "data_block_size"),
    ("hash_block_size", 69, 0x04, ParameterMismatchError, "hash_block_size"),
    ("data_blocks", 72, 0x01, ParameterMismatchError, "data_blocks"),
    ("salt_size", 80, 0x01, ParameterMismatchError, "salt"),
    ("pad1", 83, 0x01, SuperblockError, "padding"),
    ("salt", 88, 0x10, ParameterMismatchError, "salt"),
    ("salt_tail", 88 + 40, 0x01, SuperblockError, "salt"),
    ("pad2", 400, 0x01, SuperblockError, "padding"),
]


@pytest.mark.parametrize(
    ("field", "offset", "mask", "error", "check"),
    SUPERBLOCK_FIELDS,
    ids=[f[0] for f in SUPERBLOCK_FIELDS],
)
def test_flipped_superblock_field(
    image: Image, field: str, offset: int, mask: int, error: type, check: str
) -> None:
    image.flip(image.hash, offset, mask)
    with pytest.raises(error) as caught:
        image.verify()
    assert caught.value.check == check


def test_superblock_is_compared_even_when_uuid_is_not_pinned(image: Image) -> None:
    image.flip(image.hash, 72)  # data_blocks 300 -> 301
    with pytest.raises(ParameterMismatchError) as caught:
        image.verify(replace(image.params, uuid=None))
    assert (caught.value.check, caught.value.expected, caught.value.actual) == (
        "data_blocks",
        300,
        301,
    )


def test_truncated_data_file(image: Image) -> None:
    with open(image.data, "r+b") as data:
        data.truncate(299 * 512 + 100)
    with pytest.raises(ParameterMismatchError) as caught:
        image.verify()
    assert caught.value.check == "data_size"


def test_bytes_after_the_protected_range_are_not_read(image: Image) -> None:
    # Like veritysetup: only data_blocks x block size is covered. Model images forbid the tail
    # altogether (the record pins the exact size; see the model image tests).
    with open(image.data, "ab") as data:
        data.write(b"tail")
    image.verify()


def test_truncated_hash_file(image: Image) -> None:
    with open(image.hash, "r+b") as hash_file:
        hash_file.truncate(image.params.geometry.tree_end - 1)
    with pytest.raises(ParameterMismatchError) as caught:
        image.verify()
    assert caught.value.check == "hash_size"


def test_data_blocks_of_another_size_are_refused(image: Image) -> None:
    with pytest.raises(VerificationError):
        image.verify(replace(image.params, data_blocks=299))


def test_data_as_hash_blocks_attack(tmp_path: Path) -> None:
    """Fact sheet §3.8.1: with dbs == hbs, the original level-0 blocks, taken as *data*, give
    the same root hash. veritysetup, trusting the attacker's superblock, accepts them; pinned
    parameters refuse them."""
    params = VerityParams(data_blocks=2000, salt=SALT, uuid=UUID_FIXED)  # 16 level-0 blocks
    original = Image(tmp_path, params)
    fake_data, fake_hash = tmp_path / "fake.img", tmp_path / "fake.verity"
    level0 = original.tree.levels[0]
    fake_data.write_bytes(level0)
    fake_params = replace(params, data_blocks=len(level0) // 4096)
    fake = format_hash(fake_data, fake_hash, fake_params)

    assert fake.root_hash == original.root  # the attack works at the hash level
    assert veritysetup("verify", fake_data, fake_hash, original.root.hex()).returncode == 0

    with pytest.raises(ParameterMismatchError) as caught:
        verify(fake_data, fake_hash, params, original.root)
    assert caught.value.check == "data_size"
    with pytest.raises(ParameterMismatchError) as caught:
        verify(
            fake_data,
            fake_hash,
            replace(params, superblock=False, uuid=None, hash_offset=4096),
            original.root,
        )
    assert caught.value.check == "data_size"


def test_parameters_that_disagree_with_the_tree(image: Image) -> None:
    other_salt = replace(image.params, salt=bytes(32))
    with pytest.raises(ParameterMismatchError) as caught:
        image.verify(other_salt)
    assert caught.value.check == "salt"
    no_superblock = replace(image.params, superblock=False, uuid=None, hash_offset=512)
    image.verify(no_superblock)  # the same tree, read past the superblock without trusting it
    with pytest.raises(RootHashMismatchError):
        image.verify(replace(no_superblock, salt=bytes(32)))
