"""Production verified access: kernel dm-verity with pinned parameters, then a read-only mount.

    veritysetup open <image> <dm-name> <hash> <root-hex> --no-superblock --hash sha256 --format 1
        --data-block-size 4096 --hash-block-size 4096 --data-blocks N --hash-offset T --salt S
    mount -t <fs> -o ro,nodev,nosuid,noexec /dev/mapper/<dm-name> <private dir>

Nothing on disk is trusted: `--no-superblock` with every parameter from the trusted record (an
attacker-chosen superblock could otherwise shrink the data or reshape the tree, docs/verity.md
§3.8.1), and the root hash is an argument, never `--root-hash-file` (a missing file makes
veritysetup 2.6 succeed without a root hash; docs/verity.md §1, pitfalls). The kernel then checks
every block as it is read; a corrupted block reads as EIO.

Taking an activation down is `DmVerityActivator.tear_down`, the one path for a release and for
what a crashed activator left (loader.activator.recovery):

    umount <mount point>          for each mount point, most recent first; then remove the dir
    veritysetup close <dm-name>   which also frees the loop devices `open` attached to the files

This cannot run on dev/CI machines (no device-mapper in their kernels). Tests drive it through an
injected fake command runner; the real commands run only in a TDX guest.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from loader.errors import ActivationError
from loader.images.model_image import (
    ModelImage,
    Progress,
    VerifiedModel,
    check_files,
    model_work_path,
)
from loader.images.record import TrustedRecord
from loader.verity.params import SUPERBLOCK_SIZE
from loader.verity.superblock import check_superblock, parse_superblock

MOUNT_OPTIONS = "ro,nodev,nosuid,noexec"
# Every device-mapper name the loader makes starts with it (see device_name).
DEVICE_PREFIX = "appliance-model-"
_COMMAND_TIMEOUT = 120

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    """The real runner: no shell, captured output, a timeout."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return CommandResult(returncode=-1, stdout="", stderr=str(error))
    return CommandResult(done.returncode, done.stdout, done.stderr)


def device_name(record: TrustedRecord) -> str:
    # The digest prefix keeps two versions of one model name from colliding.
    return f"{DEVICE_PREFIX}{record.name}-{record.digest[:16]}"


def command_error(
    result: CommandResult, what: str, *, actual: str | None = None
) -> ActivationError | None:
    """The ActivationError of a failed command (exit status and the end of its stderr), or None."""
    if result.returncode == 0:
        return None
    return ActivationError(
        f"{what} failed with exit status {result.returncode}: {result.stderr.strip()[-2000:]}",
        check=what,
        actual=actual,
    )


def open_command(
    veritysetup: str, image: ModelImage, record: TrustedRecord, name: str
) -> list[str]:
    """`veritysetup open` with every parameter pinned and no trust in an on-disk superblock."""
    params = record.params
    return [
        veritysetup, "open", str(image.image_path), name, str(image.hash_path), record.digest,
        "--no-superblock",
        "--hash", params.hash_algorithm,
        "--format", str(params.hash_format),
        "--data-block-size", str(params.data_block_size),
        "--hash-block-size", str(params.hash_block_size),
        "--data-blocks", str(params.data_blocks),
        # Without a superblock the offset is where the tree starts (block-aligned by construction).
        "--hash-offset", str(params.geometry.tree_offset),
        "--salt", params.salt.hex() or "-",
    ]  # fmt: skip


@dataclass(frozen=True)
class Mapping:
    """A verity device and its mounts under the mount dir: what a teardown still has to undo."""

    device: str
    mount_points: tuple[Path, ...] = ()  # most recent first: unmounted in this order
    mapped: bool = True


@dataclass(frozen=True)
class DmVerityActivator:
    """`activate` has the signature of `materialize_verified`, so a caller can take either."""

    run: CommandRunner = run_command
    veritysetup: str = "veritysetup"
    mount: str = "mount"
    umount: str = "umount"

    def activate(
        self,
        image: ModelImage,
        record: TrustedRecord,
        work_dir: Path,
        *,
        progress: Progress | None = None,
    ) -> VerifiedModel:
        # 1. Cheap checks first: same model, pinned file sizes, and an on-disk superblock (unused,
        #    but a mismatch means someone changed the files) that agrees with the record.
        self._check_files(image, record)
        # 2. Map the verity device with pinned parameters and the root hash as an argument.
        name = device_name(record)
        self._run(open_command(self.veritysetup, image, record, name), "veritysetup open")
        try:
            # 3. Mount it read-only, without devices, setuid or exec, in a private directory.
            Path(work_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            mount_point = model_work_path(work_dir, record)
            _fresh_directory(mount_point)
            try:
                self._run(
                    [self.mount, "-t", record.filesystem, "-o", MOUNT_OPTIONS,
                     f"/dev/mapper/{name}", str(mount_point)],
                    "mount",
                )  # fmt: skip
            except BaseException:
                os.rmdir(mount_point)
                raise
        except BaseException:
            _, error = self.tear_down(Mapping(name))
            if error is not None:
                logger.error("could not close %s after a failed activation: %s", name, error)
            raise
        if progress is not None:
            progress(1.0)  # the kernel verifies lazily, on every read
        logger.info("model %s active as %s, digest %s", record.name, name, record.digest)
        return VerifiedModel(
            path=mount_point,
            record=record,
            _release=lambda: self._release(Mapping(name, (mount_point,))),
        )

    def _check_files(self, image: ModelImage, record: TrustedRecord) -> None:
        data_fd = os.open(image.image_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            hash_fd = os.open(image.hash_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                check_files(image, record, data_fd, hash_fd)
                if record.params.superblock:
                    raw = os.pread(hash_fd, SUPERBLOCK_SIZE, record.params.hash_offset)
                    check_superblock(parse_superblock(raw), record.params)
            finally:
                os.close(hash_fd)
        finally:
            os.close(data_fd)

    def tear_down(self, mapping: Mapping) -> tuple[Mapping, ActivationError | None]:
        """Undo what is left, in order; stop at the first failure. Returns what remains and why.

        A failed step is kept in what remains, so calling again with it retries from there.
        """
        # 1. Unmount (EBUSY while a reader has files open: the device stays, the data stays
        #    readable), then remove the emptied mount point.
        while mapping.mount_points:
            mount_point = mapping.mount_points[0]
            error = self._try([self.umount, str(mount_point)], "umount")
            if error is not None:
                return mapping, error
            mapping = replace(mapping, mount_points=mapping.mount_points[1:])
            _remove_mount_point(mount_point)
        # 2. Close the device, once nothing of ours has it mounted. There is no loop device to
        #    detach: veritysetup attaches them with autoclear, so closing the device frees them.
        if mapping.mapped:
            error = self._try([self.veritysetup, "close", mapping.device], "veritysetup close")
            if error is not None:
                return mapping, error
            mapping = replace(mapping, mapped=False)
        return mapping, None

    def _release(self, mapping: Mapping) -> None:
        _, error = self.tear_down(mapping)
        if error is not None:
            raise error

    def _try(self, argv: list[str], what: str) -> ActivationError | None:
        """A teardown step: its error names what it was undoing (a mount point or a device)."""
        return command_error(self.run(argv), what, actual=argv[-1])

    def _run(self, argv: list[str], what: str) -> None:
        error = command_error(self.run(argv), what)
        if error is not None:
            raise error


def _remove_mount_point(mount_point: Path) -> None:
    # An empty directory left behind is harmless (names are unique); the teardown goes on.
    try:
        os.rmdir(mount_point)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("could not remove mount point %s: %s", mount_point, error.strerror)


def _fresh_directory(path: Path) -> None:
    """An empty 0700 directory at `path`; an empty one left by an earlier run is taken over."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        try:
            path.rmdir()  # fails unless empty: a leftover mount is recovery's to tear down
        except OSError as exc:
            raise ActivationError(
                f"the mount point {path} is in use", check="mount point", actual=str(exc)
            ) from None
        path.mkdir(mode=0o700)
