"""dm-verity parameters and the shape of the hash tree they imply.

Follows cryptsetup's `lib/verity` (format, superblock, offsets) and the kernel's dm-verity target;
see docs/verity.md §3. `VerityParams` cannot hold values that no verity device can
have: every constructor path validates, so code that receives one need not re-check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from uuid import UUID

from loader.errors import VerityParamsError

SUPERBLOCK_SIZE = 512
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 512 * 1024  # VERITY_BLOCK_SIZE_OK in cryptsetup
MAX_SALT_SIZE = 256
MAX_LEVELS = 63  # VERITY_MAX_LEVELS in cryptsetup

# Kernel crypto API names (what veritysetup, the superblock and the dm table use) -> hashlib names.
# An explicit list: a name outside it would not mean the same thing to the kernel.
KERNEL_HASHES = {
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha3-224": "sha3_224",
    "sha3-256": "sha3_256",
    "sha3-384": "sha3_384",
    "sha3-512": "sha3_512",
    "blake2b-512": "blake2b",
    "blake2s-256": "blake2s",
    "sm3": "sm3",
}

HashConstructor = Callable[..., Any]


def hash_constructor(algorithm: str) -> HashConstructor:
    """The hashlib constructor for a kernel hash name (`sha256`, `sha3-256`, `blake2b-512`, ...).

    Direct constructors such as `hashlib.sha256` are measurably faster than `hashlib.new(name)`
    when called once per 4 KiB block.
    """
    name = KERNEL_HASHES.get(algorithm) if isinstance(algorithm, str) else None
    if name is None:
        raise VerityParamsError(
            "unsupported hash algorithm",
            check="hash_algorithm",
            expected=f"one of {', '.join(KERNEL_HASHES)}",
            actual=repr(algorithm),
        )
    if name in hashlib.algorithms_guaranteed:
        constructor: HashConstructor = getattr(hashlib, name)
    elif name in hashlib.algorithms_available:

        def constructor(data: bytes = b"") -> Any:
            return hashlib.new(name, data)

    else:
        raise VerityParamsError(
            "hash algorithm not available in this OpenSSL", check="hash_algorithm", actual=algorithm
        )
    return constructor


def _check_block_size(field: str, value: int) -> None:
    if not MIN_BLOCK_SIZE <= value <= MAX_BLOCK_SIZE or value & (value - 1):
        raise VerityParamsError(
            f"{field} must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}",
            check=field,
            actual=value,
        )


def _check_int(field: str, value: object) -> None:
    # bool is an int subclass; `True` data blocks is a bug, not a parameter.
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerityParamsError(f"{field} must be an integer", check=field, actual=repr(value))


@dataclass(frozen=True)
class VerityParams:
    """Everything that determines a dm-verity hash tree and where it sits in the hash file.

    `hash_offset` is veritysetup's `--hash-offset`: the byte offset of the superblock in the hash
    file, or of the tree itself with `superblock=False`. `uuid` only exists in a superblock; when it
    is None the superblock's UUID is not compared (the trusted record always pins it).
    """

    data_blocks: int
    hash_algorithm: str = "sha256"
    hash_format: int = 1
    data_block_size: int = 4096
    hash_block_size: int = 4096
    salt: bytes = b""
    hash_offset: int = 0
    superblock: bool = True
    uuid: UUID | None = None

    def __post_init__(self) -> None:
        for field in ("data_blocks", "hash_format", "data_block_size", "hash_block_size"):
            _check_int(field, getattr(self, field))
        _check_int("hash_offset", self.hash_offset)
        if self.data_blocks < 1:
            raise VerityParamsError(
                "a verity device needs at least one data block",
                check="data_blocks",
                actual=self.data_blocks,
            )
        if self.data_blocks >= 1 << 63:
            raise VerityParamsError("data_blocks overflows", check="data_blocks")
        if self.hash_format not in (0, 1):
            raise VerityParamsError(
                "hash format must be 1 (normal) or 0 (original Chrome OS)",
                check="hash_format",
                actual=self.hash_format,
            )
        _check_block_size("data_block_size", self.data_block_size)
        _check_block_size("hash_block_size", self.hash_block_size)
        if not isinstance(self.salt, bytes):
            raise VerityParamsError("salt must be bytes", check="salt", actual=type(self.salt))
        if len(self.salt) > MAX_SALT_SIZE:
            raise VerityParamsError(
                f"salt longer than {MAX_SALT_SIZE} bytes", check="salt", actual=len(self.salt)
            )
        if not isinstance(self.superblock, bool):
            raise VerityParamsError("superblock must be a boolean", check="superblock")
        if self.hash_offset < 0:
            raise VerityParamsError("hash offset is negative", check="hash_offset")
        if self.superblock and self.hash_offset % SUPERBLOCK_SIZE:
            raise VerityParamsError(
                "hash offset with a superblock must be a multiple of 512 bytes",
                check="hash_offset",
                actual=self.hash_offset,
            )
        # veritysetup silently rounds a misaligned offset down and writes the tree *before* the
        # requested offset (docs/verity.md §1, pitfalls); refuse instead.
        if not self.superblock and self.hash_offset % self.hash_block_size:
            raise VerityParamsError(
                "hash offset without a superblock must be a multiple of the hash block size",
                check="hash_offset",
                expected=f"a multiple of {self.hash_block_size}",
                actual=self.hash_offset,
            )
        if self.uuid is not None and not isinstance(self.uuid, UUID):
            raise VerityParamsError("uuid must be a uuid.UUID", check="uuid")
        if self.uuid is not None and not self.superblock:
            raise VerityParamsError("a UUID exists only in a superblock", check="uuid")
        digest_size = self.digest_size  # validates the algorithm
        if self.hash_block_size // digest_size < 2:
            raise VerityParamsError(
                "hash block must hold at least two digests",
                check="hash_block_size",
                actual=self.hash_block_size,
            )
        if self.geometry.levels > MAX_LEVELS:
            raise VerityParamsError("too many tree levels", check="data_blocks")

    @cached_property
    def digest_size(self) -> int:
        return int(hash_constructor(self.hash_algorithm)().digest_size)

    @property
    def data_size(self) -> int:
        """Bytes protected by the tree: data_blocks * data_block_size, from offset 0."""
        return self.data_blocks * self.data_block_size

    @cached_property
    def geometry(self) -> TreeGeometry:
        return TreeGeometry.of(self)


@dataclass(frozen=True)
class TreeGeometry:
    """Where each tree level sits in the hash file (cryptsetup `hash_levels()`).

    Levels are numbered from the leaves: level 0 holds the digests of data blocks. On disk the top
    level comes first. Indices are absolute hash-block numbers in the hash file.
    """

    hash_block_size: int
    digest_size: int
    slot_size: int  # bytes per digest in a block: next power of two (format 1) or the digest size
    hashes_per_block: int
    tree_start_block: int
    level_blocks: tuple[int, ...]  # level 0 first
    level_start_blocks: tuple[int, ...]  # level 0 first

    @classmethod
    def of(cls, params: VerityParams) -> TreeGeometry:
        hbs = params.hash_block_size
        digest_size = params.digest_size
        # hashes_per_block = 2^floor(log2(hbs / digest_size)), in both formats.
        per_block_bits = (hbs // digest_size).bit_length() - 1
        hashes_per_block = 1 << per_block_bits
        slot = 1 << (digest_size - 1).bit_length() if params.hash_format == 1 else digest_size
        if params.superblock:
            start = (params.hash_offset + SUPERBLOCK_SIZE + hbs - 1) // hbs
        else:
            start = params.hash_offset // hbs
        sizes: list[int] = []
        count = params.data_blocks
        while count > 1:
            count = -(-count // hashes_per_block)
            sizes.append(count)
        starts = [0] * len(sizes)
        position = start
        for level in reversed(range(len(sizes))):
            starts[level] = position
            position += sizes[level]
        return cls(
            hash_block_size=hbs,
            digest_size=digest_size,
            slot_size=slot,
            hashes_per_block=hashes_per_block,
            tree_start_block=start,
            level_blocks=tuple(sizes),
            level_start_blocks=tuple(starts),
        )

    @property
    def levels(self) -> int:
        return len(self.level_blocks)

    @property
    def tree_blocks(self) -> int:
        return sum(self.level_blocks)

    @property
    def tree_offset(self) -> int:
        """Byte offset of the first tree block (the top level) in the hash file."""
        return self.tree_start_block * self.hash_block_size

    @property
    def tree_end(self) -> int:
        """Byte offset just past the tree: the least hash-file size that holds it."""
        return (self.tree_start_block + self.tree_blocks) * self.hash_block_size

    def level_offset(self, level: int) -> int:
        return self.level_start_blocks[level] * self.hash_block_size
