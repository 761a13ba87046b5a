"""The 512-byte verity superblock (cryptsetup `struct verity_sb`), parsed strictly.

An on-disk superblock is never trusted: a caller that holds pinned parameters compares every field
with `check_superblock` and refuses any difference (docs/verity.md §3.8.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from uuid import UUID

from loader.errors import ParameterMismatchError, SuperblockError, VerityParamsError
from loader.verity.params import MAX_SALT_SIZE, SUPERBLOCK_SIZE, VerityParams

SIGNATURE = b"verity\0\0"
SUPERBLOCK_VERSION = 1
# signature, version, hash_type, uuid, algorithm, data_block_size, hash_block_size, data_blocks,
# salt_size, _pad1, salt, _pad2: little-endian, packed.
_LAYOUT = struct.Struct("<8sII16s32sIIQH6s256s168s")
if _LAYOUT.size != SUPERBLOCK_SIZE:
    raise AssertionError("superblock layout size mismatch")


@dataclass(frozen=True)
class Superblock:
    hash_type: int
    uuid: UUID
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes

    def to_params(self, hash_offset: int) -> VerityParams:
        """The parameters this superblock describes, for a superblock found at `hash_offset`."""
        try:
            return VerityParams(
                data_blocks=self.data_blocks,
                hash_algorithm=self.algorithm,
                hash_format=self.hash_type,
                data_block_size=self.data_block_size,
                hash_block_size=self.hash_block_size,
                salt=self.salt,
                hash_offset=hash_offset,
                superblock=True,
                uuid=self.uuid,
            )
        except VerityParamsError as error:
            raise SuperblockError(f"superblock holds invalid parameters: {error}") from error


def build_superblock(params: VerityParams) -> bytes:
    if not params.superblock or params.uuid is None:
        raise VerityParamsError("a superblock needs superblock=True and a UUID", check="uuid")
    return _LAYOUT.pack(
        SIGNATURE,
        SUPERBLOCK_VERSION,
        params.hash_format,
        params.uuid.bytes,
        params.hash_algorithm.encode("ascii"),
        params.data_block_size,
        params.hash_block_size,
        params.data_blocks,
        len(params.salt),
        b"",
        params.salt,
        b"",
    )


def parse_superblock(raw: bytes) -> Superblock:
    """Structure only: signature, version, string and padding rules. Values are checked later."""
    if len(raw) != SUPERBLOCK_SIZE:
        raise SuperblockError(
            "superblock truncated",
            check="superblock_size",
            expected=SUPERBLOCK_SIZE,
            actual=len(raw),
        )
    (
        signature,
        version,
        hash_type,
        uuid_bytes,
        algorithm_field,
        data_block_size,
        hash_block_size,
        data_blocks,
        salt_size,
        pad1,
        salt_field,
        pad2,
    ) = _LAYOUT.unpack(raw)
    if signature != SIGNATURE:
        raise SuperblockError(
            "no verity superblock", check="signature", expected=SIGNATURE, actual=signature
        )
    if version != SUPERBLOCK_VERSION:
        raise SuperblockError(
            "unsupported superblock version", check="version", expected=1, actual=version
        )
    name, _, tail = algorithm_field.partition(b"\0")
    if any(tail) or not name:
        raise SuperblockError("algorithm field is not a NUL-padded name", check="algorithm")
    try:
        algorithm = name.decode("ascii")
    except UnicodeDecodeError:
        raise SuperblockError("algorithm name is not ASCII", check="algorithm") from None
    if salt_size > MAX_SALT_SIZE:
        raise SuperblockError(
            "salt size too large",
            check="salt_size",
            expected=f"<= {MAX_SALT_SIZE}",
            actual=salt_size,
        )
    if any(salt_field[salt_size:]):
        raise SuperblockError("bytes after the salt are not zero", check="salt")
    if any(pad1) or any(pad2):
        raise SuperblockError("superblock padding is not zero", check="padding")
    return Superblock(
        hash_type=hash_type,
        uuid=UUID(bytes=uuid_bytes),
        algorithm=algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
        data_blocks=data_blocks,
        salt=salt_field[:salt_size],
    )


def check_superblock(superblock: Superblock, params: VerityParams) -> None:
    """Refuse a superblock that disagrees with pinned parameters in any field."""
    pinned: list[tuple[str, object, object]] = [
        ("hash_format", params.hash_format, superblock.hash_type),
        ("hash_algorithm", params.hash_algorithm, superblock.algorithm),
        ("data_block_size", params.data_block_size, superblock.data_block_size),
        ("hash_block_size", params.hash_block_size, superblock.hash_block_size),
        ("data_blocks", params.data_blocks, superblock.data_blocks),
        ("salt", params.salt.hex() or "-", superblock.salt.hex() or "-"),
    ]
    if params.uuid is not None:
        pinned.append(("uuid", params.uuid, superblock.uuid))
    for field, expected, actual in pinned:
        if expected != actual:
            raise ParameterMismatchError(
                f"on-disk superblock disagrees with the pinned {field}",
                check=field,
                expected=expected,
                actual=actual,
            )
