"""Level 0 in worker processes: same results as in-process, corruption found in any chunk,
the verified copy written by workers, and a fallback when workers cannot start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import UUID

import pytest
from verity_helpers import veritysetup_format, write_random

from loader.errors import DataCorruptionError
from loader.verity import VerityParams, format_hash, level0, verify
from loader.verity.level0 import FileRef
from loader.verity.verify import authenticate_tree, read_hash_area, verify_data

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS = VerityParams(data_blocks=3000, salt=b"\x11" * 32, uuid=UUID(int=3))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parent cuts the work: 512 KiB chunks give 24 tasks for 12 MiB of data.
    monkeypatch.setattr(level0, "CHUNK_SIZE", 512 << 10)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.img"
    write_random(path, PARAMS.data_size, seed=8)
    return path


def test_same_tree_as_veritysetup(data: Path, tmp_path: Path) -> None:
    root = veritysetup_format(data, tmp_path / "theirs", PARAMS)
    assert format_hash(data, tmp_path / "ours", PARAMS, workers=2).root_hash == root
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes()
    seen: list[float] = []
    verify(data, tmp_path / "ours", PARAMS, root, workers=2, progress=seen.append)
    assert len(seen) == 24 and seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.parametrize("block", [0, 127, 128, 1500, 2999])
def test_corruption_in_any_chunk(data: Path, tmp_path: Path, block: int) -> None:
    root = format_hash(data, tmp_path / "h", PARAMS).root_hash
    raw = bytearray(data.read_bytes())
    raw[block * 4096 + 100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(DataCorruptionError) as caught:
        verify(data, tmp_path / "h", PARAMS, root, workers=2)
    assert caught.value.block == block


def test_workers_write_the_verified_copy(data: Path, tmp_path: Path) -> None:
    root = format_hash(data, tmp_path / "h", PARAMS).root_hash
    with open(tmp_path / "h", "rb") as hash_file:
        tree = authenticate_tree(read_hash_area(hash_file.fileno(), PARAMS), PARAMS, root)
    copy = tmp_path / "copy"
    copy.write_bytes(bytes(PARAMS.data_size))
    with open(data, "rb") as source, open(copy, "r+b") as sink:
        verify_data(
            tree, FileRef.of(data, source.fileno()), workers=2, sink=FileRef.of(copy, sink.fileno())
        )
    assert copy.read_bytes() == data.read_bytes()


def test_a_replaced_file_is_not_read(data: Path, tmp_path: Path) -> None:
    with open(data, "rb") as source:
        ref = FileRef.of(data, source.fileno())
    other = tmp_path / "other.img"
    other.write_bytes(data.read_bytes())
    other.replace(data)  # same path, another inode
    with pytest.raises(level0.VerityIOError, match="replaced"):
        level0.digest_range(ref, PARAMS, 0, 128)


def test_falls_back_in_process_when_workers_cannot_start(data: Path, tmp_path: Path) -> None:
    # A __main__ read from stdin cannot be re-imported by the forkserver's children.
    root = format_hash(data, tmp_path / "h", PARAMS).root_hash
    script = textwrap.dedent(
        f"""
        import logging
        import loader.verity.level0 as level0
        from loader.verity import VerityParams, verify
        from uuid import UUID
        logging.basicConfig()
        level0.CHUNK_SIZE = 512 << 10
        params = VerityParams(data_blocks=3000, salt=b"\\x11" * 32, uuid=UUID(int=3))
        verify({str(data)!r}, {str(tmp_path / "h")!r}, params,
               bytes.fromhex({root.hex()!r}), workers=2)
        print("verified")
        """
    )
    done = subprocess.run(
        [sys.executable, "-"],
        check=False,
        input=script,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "verified"
    assert "continuing in-process" in done.stderr
