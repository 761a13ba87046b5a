"""Read-only filesystem images of a model directory: build (reproducibly), recognise, extract.

squashfs (default) and erofs, built by their Debian tools with every source of variation pinned
(timestamps, ownership, xattrs, filesystem UUID), so that the same directory gives the same bytes
and therefore the same root hash (docs/verity.md §2).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from loader.errors import ImageError

FILESYSTEMS = ("squashfs", "erofs")
# erofs stores a filesystem UUID; a fixed one keeps images reproducible. Never used to identify a
# model (the root hash does that).
EROFS_UUID = (
    "431662e9-d5be-5828-815e-0dbbccd18bf2"  # uuid5(NAMESPACE_URL, "appliance:model-image:erofs")
)
_SQUASHFS_MAGIC = (0, b"hsqs")
_EROFS_MAGIC = (1024, bytes.fromhex("e2e1f5e0"))
_TOOL_TIMEOUT = 6 * 3600


def build_command(filesystem: str, source_dir: Path, output: Path) -> list[str]:
    if filesystem == "squashfs":
        return [
            "mksquashfs", str(source_dir), str(output),
            # Timestamps come from SOURCE_DATE_EPOCH=0 (see build_image); mksquashfs refuses
            # -mkfs-time/-all-time alongside it.
            "-noappend", "-all-root", "-no-xattrs", "-reproducible",
            # zstd at a low level: weights barely compress, and extraction speed matters more.
            "-comp", "zstd", "-Xcompression-level", "3",
            "-quiet", "-no-progress",
        ]  # fmt: skip
    if filesystem == "erofs":
        return [
            "mkfs.erofs", "-T0", f"-U{EROFS_UUID}", "--all-root", "-x-1", "--quiet",
            str(output), str(source_dir),
        ]  # fmt: skip
    raise ImageError(
        "unknown filesystem", check="filesystem", expected="squashfs|erofs", actual=filesystem
    )


def build_image(source_dir: Path, output: Path, filesystem: str) -> None:
    """Build `output` from `source_dir`; the size is always a multiple of 4 KiB."""
    check_tree(source_dir)
    _run(build_command(filesystem, source_dir, output), env={"SOURCE_DATE_EPOCH": "0"})
    size = output.stat().st_size
    if size == 0 or size % 4096:
        raise ImageError(
            f"{filesystem} image size is not a positive multiple of 4096",
            check="image_size",
            actual=size,
        )


def detect_filesystem(fd: int) -> str | None:
    for name, (offset, magic) in (("squashfs", _SQUASHFS_MAGIC), ("erofs", _EROFS_MAGIC)):
        if os.pread(fd, len(magic), offset) == magic:
            return name
    return None


def extract_image(image: Path, filesystem: str, destination: Path) -> None:
    """Extract every file of `image` into `destination` (which must not exist yet)."""
    if filesystem == "squashfs":
        command = [
            "unsquashfs",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
            "-d",
            str(destination),
            str(image),
        ]
    elif filesystem == "erofs":
        destination.mkdir(mode=0o700)
        command = ["fsck.erofs", f"--extract={destination}", "--no-preserve", str(image)]
    else:
        raise ImageError("unknown filesystem", check="filesystem", actual=filesystem)
    _run(command)
    check_tree(destination)


def check_tree(root: Path) -> None:
    """Only directories, regular files and symlinks that stay inside `root`.

    A model needs nothing else; device nodes, FIFOs and escaping links in an image would be a
    packaging mistake at best.
    """
    real_root = root.resolve(strict=True)
    for directory, dirnames, filenames in os.walk(real_root):
        for entry in dirnames + filenames:
            path = Path(directory, entry)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    raise ImageError(
                        "symlink points outside the model directory",
                        check="symlink",
                        actual=f"{path.relative_to(real_root)} -> {os.readlink(path)}",
                    )
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ImageError(
                    "model trees may hold only files, directories and internal symlinks",
                    check="file_type",
                    actual=str(path.relative_to(real_root)),
                )


def make_read_only(root: Path) -> None:
    """Files 0444, directories 0555: the engine reads the model, nothing writes it."""
    for directory, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o444)
        for name in dirnames:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o555)
    root.chmod(0o555)


def _run(command: Sequence[str], env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except FileNotFoundError:
        raise ImageError(
            f"{command[0]} not found (install squashfs-tools / erofs-utils)", check="tool"
        ) from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise ImageError(
            f"{command[0]} failed with exit status {result.returncode}: {tail}", check="tool"
        )
