"""Our hash trees against the real veritysetup 2.6 and libcryptsetup (docs/verity.md §4 matrix).

Each case, with the same UUID and salt: (a) same root hash, (b) our hash file byte-identical to
veritysetup's (superblock, padding, tree), (c) veritysetup verifies ours, (d) we verify its
output, (e) libcryptsetup's userspace check accepts ours. Cases above 8 MiB are marked slow.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import UUID

import pytest
from verity_helpers import (
    libcryptsetup_verify,
    veritysetup,
    veritysetup_format,
    veritysetup_options,
    veritysetup_verify,
    write_random,
)

from loader.errors import VerityParamsError
from loader.verity import VerityParams, format_hash, verify

UUID_FIXED = UUID("5c2f3a1e-8d47-4b6a-9f10-3e2d1c0b9a87")
SALT_32 = bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
SLOW_SIZE = 8 << 20


@dataclass(frozen=True)
class Case:
    id: str
    data_size: int  # bytes in the data file
    params: dict = field(default_factory=dict)  # VerityParams fields except data_blocks/uuid

    def build(self) -> VerityParams:
        fields = {"salt": SALT_32, **self.params}
        dbs = fields.get("data_block_size", 4096)
        superblock = fields.get("superblock", True)
        blocks = fields.pop("data_blocks", self.data_size // dbs)
        return VerityParams(data_blocks=blocks, uuid=UUID_FIXED if superblock else None, **fields)


def _hashes_per_block(algorithm: str, hash_block_size: int) -> int:
    digest = hashlib.new(algorithm).digest_size
    return 1 << ((hash_block_size // digest).bit_length() - 1)


def _shape_cases() -> list[Case]:
    cases = []
    for algorithm in ("sha256", "sha512", "sha1", "sha224", "sha384"):
        for dbs, hbs in ((4096, 4096), (1024, 1024), (512, 512), (4096, 512), (512, 4096)):
            per = _hashes_per_block(algorithm, hbs)
            for blocks in (1, 2, per, per + 1, per * per, per * per + 1):
                cases.append(
                    Case(
                        f"{algorithm}-{dbs}-{hbs}-{blocks}blk",
                        blocks * dbs,
                        {
                            "hash_algorithm": algorithm,
                            "data_block_size": dbs,
                            "hash_block_size": hbs,
                        },
                    )
                )
    return cases


def _other_cases() -> list[Case]:
    cases = [
        Case("salt-none", 300 * 4096, {"salt": b""}),
        Case("salt-1-byte", 300 * 4096, {"salt": b"\x5a"}),
        Case("salt-32-zero-bytes", 300 * 4096, {"salt": bytes(32)}),
        Case("salt-256-bytes", 300 * 4096, {"salt": bytes(range(256))}),
        Case("no-superblock-4096", 300 * 4096, {"superblock": False}),
        Case(
            "no-superblock-512",
            300 * 512,
            {"superblock": False, "data_block_size": 512, "hash_block_size": 512},
        ),
        Case("no-superblock-offset-8192", 300 * 4096, {"superblock": False, "hash_offset": 8192}),
        Case("hash-offset-8192", 300 * 4096, {"hash_offset": 8192}),
        Case("hash-offset-512", 300 * 4096, {"hash_offset": 512}),
        Case("data-blocks-100-of-300", 300 * 4096, {"data_blocks": 100}),
        Case("partial-tail-40961", 40961, {}),
        Case("dbs-8192", 100 * 8192, {"data_block_size": 8192}),
        Case(
            "dbs-2048-hbs-1024-sha512",
            700 * 2048,
            {"data_block_size": 2048, "hash_block_size": 1024, "hash_algorithm": "sha512"},
        ),
        Case(
            "dbs-65536-hbs-65536",
            40 * 65536,
            {"data_block_size": 65536, "hash_block_size": 65536},
        ),
        Case("sha3-256", 300 * 4096, {"hash_algorithm": "sha3-256"}),
        Case("blake2b-512", 300 * 4096, {"hash_algorithm": "blake2b-512"}),
        Case("blake2s-256", 300 * 4096, {"hash_algorithm": "blake2s-256"}),
        Case("sm3", 300 * 4096, {"hash_algorithm": "sm3"}),
        Case("16385-blocks", 16385 * 4096, {}),
    ]  # fmt: skip
    for algorithm in ("sha256", "sha1", "sha512"):
        for hbs in (4096, 512):
            for blocks in (1, 129, 1000):
                cases.append(
                    Case(
                        f"format0-{algorithm}-hbs{hbs}-{blocks}blk",
                        blocks * 4096,
                        {"hash_format": 0, "hash_algorithm": algorithm, "hash_block_size": hbs},
                    )
                )
    cases.append(Case("format0-no-salt", 1000 * 4096, {"hash_format": 0, "salt": b""}))
    return cases


def _param(case: Case) -> pytest.param:
    marks = [pytest.mark.slow] if case.data_size > SLOW_SIZE else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in _shape_cases() + _other_cases()])
def test_same_tree_as_veritysetup(case: Case, tmp_path: Path) -> None:
    params = case.build()
    data = tmp_path / "data.img"
    write_random(data, case.data_size, seed=zlib.crc32(case.id.encode()))
    if params.hash_algorithm == "sm3" and "sm3" not in hashlib.algorithms_available:
        pytest.skip("OpenSSL here has no sm3")
    theirs, ours = tmp_path / "theirs.hash", tmp_path / "ours.hash"

    root = veritysetup_format(data, theirs, params)
    tree = format_hash(data, ours, params)

    assert tree.root_hash.hex() == root.hex()
    assert ours.read_bytes() == theirs.read_bytes()
    assert veritysetup_verify(data, ours, params, root) == 0
    verify(data, theirs, params, root)
    assert libcryptsetup_verify(data, ours, params, root) == 0


def test_data_and_hash_in_one_file(tmp_path: Path) -> None:
    blocks = 1024
    payload = write_random(tmp_path / "payload", blocks * 4096, seed=3)
    params = VerityParams(
        data_blocks=blocks, salt=SALT_32, uuid=UUID_FIXED, hash_offset=blocks * 4096
    )
    theirs, ours = tmp_path / "theirs.img", tmp_path / "ours.img"
    theirs.write_bytes(payload)
    ours.write_bytes(payload)

    root = veritysetup_format(theirs, theirs, params)
    tree = format_hash(ours, ours, params)

    assert tree.root_hash == root
    assert ours.read_bytes() == theirs.read_bytes()
    assert veritysetup_verify(ours, ours, params, root) == 0
    verify(theirs, theirs, params, root)


def test_one_file_refuses_overlapping_areas(tmp_path: Path) -> None:
    image = tmp_path / "image"
    write_random(image, 100 * 4096, seed=1)
    params = VerityParams(data_blocks=100, salt=SALT_32, uuid=UUID_FIXED, hash_offset=50 * 4096)
    assert veritysetup("format", image, image, *veritysetup_options(params)).returncode != 0
    with pytest.raises(VerityParamsError, match="overlaps"):
        format_hash(image, image, params)


def test_misaligned_no_superblock_offset_is_refused(tmp_path: Path) -> None:
    # veritysetup accepts it and writes the tree at 4096, before the requested offset.
    data = tmp_path / "data.img"
    write_random(data, 300 * 4096, seed=2)
    aligned = VerityParams(data_blocks=300, salt=SALT_32, superblock=False, hash_offset=4096)
    options = veritysetup_options(aligned)
    options[options.index("--hash-offset") + 1] = "4608"
    done = veritysetup("format", data, tmp_path / "h", *options)
    assert done.returncode == 0
    format_hash(data, tmp_path / "at-4096", aligned)
    assert (tmp_path / "h").read_bytes() == (tmp_path / "at-4096").read_bytes()
    with pytest.raises(VerityParamsError, match="multiple of the hash block size"):
        replace(aligned, hash_offset=4608)


@pytest.mark.parametrize("size", [0, 4095])
def test_data_smaller_than_one_block_is_refused_by_both(size: int, tmp_path: Path) -> None:
    data = tmp_path / "data.img"
    data.write_bytes(bytes(size))
    assert veritysetup("format", data, tmp_path / "h").returncode != 0
    with pytest.raises(VerityParamsError, match="at least one data block"):
        VerityParams(data_blocks=size // 4096)


def test_salt_of_257_bytes_is_refused_by_both(tmp_path: Path) -> None:
    data = tmp_path / "data.img"
    write_random(data, 10 * 4096, seed=4)
    assert veritysetup("format", data, tmp_path / "h", "--salt", "ab" * 257).returncode != 0
    with pytest.raises(VerityParamsError, match="salt"):
        VerityParams(data_blocks=10, salt=bytes(257))


def test_all_zero_data(tmp_path: Path) -> None:
    data = tmp_path / "zero.img"
    data.write_bytes(bytes(600 * 4096))
    params = VerityParams(data_blocks=600, salt=SALT_32, uuid=UUID_FIXED)
    root = veritysetup_format(data, tmp_path / "theirs", params)
    assert format_hash(data, tmp_path / "ours", params).root_hash == root
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes()
