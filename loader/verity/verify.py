"""Verifying data against pinned parameters and a trusted root hash, top-down.

The tree is read once into memory (about 1/128 of the data for sha256 and 4 KiB blocks) and
authenticated from the root down before any data block is looked at; each data block is then
checked against its authenticated leaf digest. Unlike a bottom-up check this names the culprit:
a bad data block, a bad tree block (with its level), or a root that does not match.
"""

from __future__ import annotations

import hmac
import os
from contextlib import closing
from dataclasses import dataclass

from loader.errors import (
    DataCorruptionError,
    HashTreeCorruptionError,
    ParameterMismatchError,
    RootHashMismatchError,
    VerityParamsError,
)
from loader.verity.hashing import (
    digest_at,
    entry_of_byte,
    first_difference,
    hash_blocks,
    pack_level,
)
from loader.verity.level0 import FileRef, iter_level0, open_data
from loader.verity.params import SUPERBLOCK_SIZE, VerityParams
from loader.verity.superblock import check_superblock, parse_superblock
from loader.verity.tree import Progress, hash_area_size, report_progress


@dataclass(frozen=True)
class AuthenticatedTree:
    """Tree levels (level 0 first), each one proven to hash up to `root_hash`."""

    params: VerityParams
    root_hash: bytes
    levels: tuple[memoryview, ...]  # views of the immutable bytes that were authenticated


def read_hash_area(fd: int, params: VerityParams) -> bytes:
    """The hash file's bytes from `hash_offset` to the end of the tree."""
    want = hash_area_size(params)
    area = bytearray(want)
    view = memoryview(area)
    done = 0
    while done < want:
        got = os.preadv(fd, [view[done:]], params.hash_offset + done)
        if got == 0:
            raise ParameterMismatchError(
                "hash file ends before the hash tree does",
                check="hash_size",
                expected=f">= {params.hash_offset + want}",
                actual=params.hash_offset + done,
            )
        done += got
    return bytes(area)


def authenticate_tree(area: bytes, params: VerityParams, root_hash: bytes) -> AuthenticatedTree:
    """Check the hash area (from `read_hash_area`) against the parameters and the trusted root."""
    _check_root_length(params, root_hash)
    geometry = params.geometry
    base = params.hash_offset
    # 1. The superblock, if any, is well-formed and agrees with every pinned parameter.
    if params.superblock:
        check_superblock(parse_superblock(area[:SUPERBLOCK_SIZE]), params)
        # 2. Nothing hides between the superblock and the tree.
        gap = area[SUPERBLOCK_SIZE : geometry.tree_offset - base]
        if any(gap):
            at = base + SUPERBLOCK_SIZE + _first_nonzero(gap)
            raise HashTreeCorruptionError(
                f"non-zero byte at {at} between the superblock and the hash tree",
                level=None,
                offset=at,
            )
    if geometry.levels == 0:
        return AuthenticatedTree(params, root_hash, ())
    view = memoryview(area)  # zero-copy slices of immutable bytes
    levels = tuple(
        view[start : start + blocks * params.hash_block_size]
        for start, blocks in (
            (geometry.level_offset(i) - base, blocks)
            for i, blocks in enumerate(geometry.level_blocks)
        )
    )
    top = len(levels) - 1
    # 3. The top level is one block, and it hashes to the trusted root.
    computed = hash_blocks(levels[top], params.hash_block_size, params)[0]
    if not hmac.compare_digest(computed, root_hash):
        raise RootHashMismatchError(
            "hash tree does not hash to the trusted root hash"
            " (wrong root hash, or the top-level tree block is corrupted)",
            check="root_hash",
            expected=root_hash.hex(),
            actual=computed.hex(),
        )
    # 4. Top-down: with level i authenticated, its padding must be zero and its digests must be
    #    those of the blocks of level i-1, which is then authenticated in turn.
    for level in range(top, -1, -1):
        entries = params.data_blocks if level == 0 else geometry.level_blocks[level - 1]
        _check_padding(levels[level], level, entries, params)
        if level == 0:
            break
        expected = pack_level(
            hash_blocks(levels[level - 1], params.hash_block_size, params), params
        )
        difference = first_difference(levels[level], expected)
        if difference is not None:
            child = entry_of_byte(difference, params)
            offset = geometry.level_offset(level - 1) + child * params.hash_block_size
            raise HashTreeCorruptionError(
                f"hash block at byte {offset} (tree level {level - 1}) does not match its digest"
                f" in level {level}",
                level=level - 1,
                offset=offset,
                check="hash_block",
                expected=digest_at(levels[level], child, params),
                actual=digest_at(expected, child, params),
            )
    return AuthenticatedTree(params, root_hash, levels)


def verify_data(
    tree: AuthenticatedTree,
    source: FileRef,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    sink: FileRef | None = None,
) -> None:
    """Check every data block of `source` against the authenticated leaves, in data order.

    With `sink`, every block is also copied there from the same buffer that was hashed.
    """
    params = tree.params
    if params.geometry.levels == 0:
        _verify_single_block(tree, source, sink)
        report_progress(progress, 1.0)
        return
    level0 = tree.levels[0]
    per_block = params.geometry.hashes_per_block
    # closing(): on a mismatch, stop the workers now rather than when garbage-collected.
    with closing(iter_level0(source, params, workers=workers, sink=sink)) as chunks:
        for chunk in chunks:
            start = chunk.first_block // per_block * params.hash_block_size
            expected = level0[start : start + len(chunk.packed)]
            difference = first_difference(chunk.packed, expected)
            if difference is not None:
                entry = entry_of_byte(difference, params)
                block = chunk.first_block + entry
                raise DataCorruptionError(
                    f"data block {block} (byte offset {block * params.data_block_size})"
                    " does not match the hash tree",
                    block=block,
                    offset=block * params.data_block_size,
                    check="data_block",
                    expected=digest_at(expected, entry, params),
                    actual=digest_at(chunk.packed, entry, params),
                )
            report_progress(progress, (chunk.first_block + chunk.block_count) / params.data_blocks)


def verify(
    data_path: str | os.PathLike[str],
    hash_path: str | os.PathLike[str],
    params: VerityParams,
    root_hash: bytes,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> None:
    """`veritysetup verify` with pinned parameters: returns, or raises a VerificationError."""
    _check_root_length(params, root_hash)
    with open_data(data_path, params) as (_, source):
        hash_fd = os.open(hash_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            area = read_hash_area(hash_fd, params)
        finally:
            os.close(hash_fd)
        tree = authenticate_tree(area, params, root_hash)
        verify_data(tree, source, workers=workers, progress=progress)


def _verify_single_block(tree: AuthenticatedTree, source: FileRef, sink: FileRef | None) -> None:
    params = tree.params
    fd = source.open(os.O_RDONLY)
    try:
        block = os.pread(fd, params.data_block_size, 0)
    finally:
        os.close(fd)
    if len(block) != params.data_block_size:
        raise ParameterMismatchError("data file is shorter than one block", check="data_size")
    computed = hash_blocks(memoryview(block), params.data_block_size, params)[0]
    if not hmac.compare_digest(computed, tree.root_hash):
        # With one data block the root is that block's digest: data and root cannot be told apart.
        raise RootHashMismatchError(
            "the only data block does not hash to the trusted root hash",
            check="root_hash",
            expected=tree.root_hash.hex(),
            actual=computed.hex(),
        )
    if sink is not None:
        out = sink.open(os.O_WRONLY)
        try:
            os.pwrite(out, block, 0)
        finally:
            os.close(out)


def _check_root_length(params: VerityParams, root_hash: bytes) -> None:
    if len(root_hash) != params.digest_size:
        raise VerityParamsError(
            f"root hash length does not fit {params.hash_algorithm}",
            check="root_hash",
            expected=f"{params.digest_size} bytes",
            actual=f"{len(root_hash)} bytes",
        )


def _check_padding(level: memoryview, index: int, entries: int, params: VerityParams) -> None:
    geometry = params.geometry
    if geometry.hashes_per_block * geometry.digest_size == geometry.hash_block_size:
        # Digests fill whole blocks: padding only follows the last digest.
        used = _used_bytes(entries, params)
        tail = bytes(level[used:])  # less than one block
        difference = None if not any(tail) else used + _first_nonzero(tail)
    else:
        repacked = pack_level([digest_at(level, i, params) for i in range(entries)], params)
        difference = first_difference(level, repacked)
    if difference is not None:
        offset = params.geometry.level_offset(index) + difference
        raise HashTreeCorruptionError(
            f"spare area of the hash tree is not zeroed at byte {offset} (level {index})",
            level=index,
            offset=offset,
        )


def _used_bytes(entries: int, params: VerityParams) -> int:
    geometry = params.geometry
    full, rest = divmod(entries, geometry.hashes_per_block)
    return full * geometry.hash_block_size + rest * geometry.slot_size


def _first_nonzero(data: bytes) -> int:
    return len(data) - len(data.lstrip(b"\0"))
