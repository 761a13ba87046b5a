"""Building a hash tree and writing it as `veritysetup format` does, byte for byte.

Hash file layout (docs/verity.md §3.1, §3.3):
    [hash_offset: superblock (512 B)][zeros to the next hash block][top level] ... [level 0]
With `superblock=False` the tree starts at `hash_offset` itself (which must be block-aligned).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from loader.errors import VerityParamsError
from loader.verity.hashing import hash_blocks, pack_level
from loader.verity.level0 import iter_level0, open_data
from loader.verity.params import VerityParams
from loader.verity.superblock import build_superblock

Progress = Callable[[float], None]


@dataclass(frozen=True)
class HashTree:
    """A complete tree: packed levels (level 0 first) and the root hash."""

    params: VerityParams
    levels: tuple[bytes, ...]
    root_hash: bytes

    def hash_area(self) -> bytes:
        """Bytes from `hash_offset` to the end of the tree, exactly as written to the hash file."""
        geometry = self.params.geometry
        head = b""
        if self.params.superblock:
            head = build_superblock(self.params)
        head += bytes(geometry.tree_offset - self.params.hash_offset - len(head))
        return head + b"".join(reversed(self.levels))


def tree_from_level0(level0: bytes, params: VerityParams) -> HashTree:
    """Hash level 0 upwards until one block remains; the root is the digest of that block."""
    levels = [level0]
    while params.geometry.levels > len(levels):
        below = memoryview(levels[-1])
        levels.append(pack_level(hash_blocks(below, params.hash_block_size, params), params))
    top = memoryview(levels[-1])
    root = hash_blocks(top, params.hash_block_size, params)[0]
    return HashTree(params, tuple(levels), root)


def compute_tree(
    data_path: str | os.PathLike[str],
    params: VerityParams,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> HashTree:
    """The tree over the first `data_blocks` blocks of `data_path`."""
    with open_data(data_path, params) as (fd, source):
        if params.geometry.levels == 0:
            # One data block: no tree; the root is that block's digest.
            block = os.pread(fd, params.data_block_size, 0)
            root = hash_blocks(memoryview(block), params.data_block_size, params)[0]
            report_progress(progress, 1.0)
            return HashTree(params, (), root)
        parts = []
        with closing(iter_level0(source, params, workers=workers)) as chunks:
            for chunk in chunks:
                parts.append(chunk.packed)
                done = chunk.first_block + chunk.block_count
                report_progress(progress, done / params.data_blocks)
        return tree_from_level0(b"".join(parts), params)


def format_hash(
    data_path: str | os.PathLike[str],
    hash_path: str | os.PathLike[str],
    params: VerityParams,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> HashTree:
    """`veritysetup format`: build the tree over `data_path` and write it into `hash_path`.

    Like veritysetup, an existing hash file is written in place (not truncated), and a missing
    one is created with mode 0600. Data and hash may be one file if the hash area lies past the
    data (`hash_offset >= data_blocks * data_block_size`).
    """
    if params.superblock and params.uuid is None:
        raise VerityParamsError("formatting with a superblock needs a UUID", check="uuid")
    if _same_file(data_path, hash_path) and params.hash_offset < params.data_size:
        raise VerityParamsError(
            "data area overlaps with hash area",
            check="hash_offset",
            expected=f">= {params.data_size}",
            actual=params.hash_offset,
        )
    tree = compute_tree(data_path, params, workers=workers, progress=progress)
    area = memoryview(tree.hash_area())
    fd = os.open(hash_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        done = 0
        while done < len(area):
            done += os.pwrite(fd, area[done:], params.hash_offset + done)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tree


def hash_area_size(params: VerityParams) -> int:
    """Bytes from `hash_offset` to the end of the tree."""
    return params.geometry.tree_end - params.hash_offset


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def report_progress(progress: Progress | None, fraction: float) -> None:
    if progress is not None:
        progress(min(1.0, fraction))
