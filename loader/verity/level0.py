"""Digests of the data blocks (tree level 0), in worker processes for large inputs.

Level 0 is ~99 % of the work. Threads do not help (hashlib releases the GIL only for updates of
2 KiB or more, and at 4 KiB that costs what it saves); processes do (docs/verity.md §5).
Work is cut
into chunks that start on a hash-block boundary, so each chunk's result is whole hash blocks of
level 0, and consumed in order with a small window of chunks in flight (bounded memory, and an
early stop cancels the rest).

Workers open files by path and refuse a file whose device and inode differ from the one the
parent opened, so a file replaced between the two opens is never read.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass

from loader.errors import ParameterMismatchError, VerityIOError
from loader.verity.hashing import hash_blocks, pack_level
from loader.verity.params import VerityParams

READ_SIZE = 4 << 20  # bytes per preadv: large enough to amortise the syscall, small for the cache
CHUNK_SIZE = 16 << 20  # bytes of data per task
PARALLEL_MIN_SIZE = 128 << 20  # below this, starting workers costs more than it saves
MAX_DEFAULT_WORKERS = 8

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRef:
    """A file as opened by the parent: its path plus the identity a worker must find there."""

    path: str
    device: int
    inode: int

    @classmethod
    def of(cls, path: str | os.PathLike[str], fd: int) -> FileRef:
        st = os.fstat(fd)
        return cls(os.fspath(path), st.st_dev, st.st_ino)

    def open(self, flags: int) -> int:
        fd = os.open(self.path, flags | os.O_CLOEXEC)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            os.close(fd)
            raise VerityIOError(f"{self.path} was replaced while being verified")
        return fd


@dataclass(frozen=True)
class Level0Chunk:
    first_block: int
    block_count: int
    packed: bytes  # whole level-0 hash blocks for data blocks [first, first + count)


@contextmanager
def open_data(path: str | os.PathLike[str], params: VerityParams) -> Iterator[tuple[int, FileRef]]:
    """Open a data file, refusing one shorter than data_blocks * data_block_size."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < params.data_size:
            raise ParameterMismatchError(
                "data file is shorter than data_blocks \N{MULTIPLICATION SIGN} data_block_size",
                check="data_size",
                expected=f">= {params.data_size}",
                actual=size,
            )
        yield fd, FileRef.of(path, fd)
    finally:
        os.close(fd)


def default_workers(data_size: int) -> int:
    if data_size < PARALLEL_MIN_SIZE:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def digest_range(
    source: FileRef, params: VerityParams, first: int, count: int, sink: FileRef | None = None
) -> bytes:
    """Packed level-0 digests of data blocks [first, first + count); copies them to `sink` if set.

    The bytes written to `sink` are the very bytes that were hashed (one buffer), so a copy
    verified through these digests has no check-then-use gap.
    """
    block_size = params.data_block_size
    buffer = bytearray(max(block_size, READ_SIZE // block_size * block_size))
    view = memoryview(buffer)
    digests: list[bytes] = []
    fd = source.open(os.O_RDONLY)
    out = sink.open(os.O_WRONLY) if sink is not None else None
    try:
        offset = first * block_size
        end = (first + count) * block_size
        while offset < end:
            piece = view[: min(len(buffer), end - offset)]
            _read_exactly(fd, piece, offset, source.path)
            digests.extend(hash_blocks(piece, block_size, params))
            if out is not None:
                _write_all(out, piece, offset)
            offset += len(piece)
    finally:
        os.close(fd)
        if out is not None:
            os.close(out)
    return pack_level(digests, params)


def iter_level0(
    source: FileRef,
    params: VerityParams,
    *,
    workers: int | None = None,
    sink: FileRef | None = None,
) -> Generator[Level0Chunk, None, None]:
    """Level-0 chunks in data order, computed in `workers` processes (1 = in this process)."""
    if workers is None:
        workers = default_workers(params.data_size)
    chunks = _chunks(params)
    if workers <= 1:
        for first, count in chunks:
            yield Level0Chunk(first, count, digest_range(source, params, first, count, sink))
        return
    # forkserver, not fork: the caller may be a threaded server, and forking one is unsafe.
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pending: deque[tuple[int, int, Future[bytes]]] = deque()

        def submit(first: int, count: int) -> None:
            future = pool.submit(digest_range, source, params, first, count, sink)
            pending.append((first, count, future))

        todo = iter(chunks)
        for first, count in todo:
            submit(first, count)
            if len(pending) >= 2 * workers:
                break
        while pending:
            first, count, future = pending.popleft()
            try:
                packed = future.result()
            except BrokenProcessPool as error:
                # A worker died (killed, out of memory, or a __main__ that cannot be re-imported):
                # finish in this process; the result is the same, only slower.
                logger.warning("verity worker pool failed (%s); continuing in-process", error)
                rest = [(first, count)] + [(f, c) for f, c, _ in pending] + list(todo)
                pending.clear()
                for rest_first, rest_count in rest:
                    packed = digest_range(source, params, rest_first, rest_count, sink)
                    yield Level0Chunk(rest_first, rest_count, packed)
                return
            following = next(todo, None)
            if following is not None:
                submit(*following)
            yield Level0Chunk(first, count, packed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(params: VerityParams) -> list[tuple[int, int]]:
    per_block = params.geometry.hashes_per_block
    blocks_per_chunk = max(per_block, CHUNK_SIZE // params.data_block_size // per_block * per_block)
    total = params.data_blocks
    return [
        (first, min(blocks_per_chunk, total - first)) for first in range(0, total, blocks_per_chunk)
    ]


def _read_exactly(fd: int, into: memoryview, offset: int, path: str) -> None:
    done = 0
    while done < len(into):
        got = os.preadv(fd, [into[done:]], offset + done)
        if got == 0:
            raise VerityIOError(
                f"{path} ended at byte {offset + done} while reading data blocks",
                check="data_size",
                expected=f">= {offset + len(into)} bytes",
                actual=offset + done,
            )
        done += got


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
