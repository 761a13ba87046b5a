"""Model images: resolve a name, read its trusted record, and expose only verified files.

On-disk layout:
    <models-dir>/<name>.img         read-only filesystem image (squashfs or erofs), the data device
    <models-dir>/<name>.verity      dm-verity hash file: superblock at 0, tree from 4096
    <roothash-dir>/<name>.roothash  trusted record (loader.images.record): root hash and every
                                    parameter

Load steps (docs/design.md, "Load"): `resolve_model_image` -> `load_record` -> verified access,
either `materialize_verified` (dev/CI, userspace) or `loader.activator.dm_verity.DmVerityActivator`
(in the VM, kernel dm-verity). Both return a `VerifiedModel` whose `.path` is what `vllm serve`
gets.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from loader.errors import (
    ImageError,
    ModelNameError,
    ModelNotFoundError,
    ParameterMismatchError,
    RecordError,
)
from loader.images.fsimage import detect_filesystem, extract_image, make_read_only
from loader.images.names import check_model_name
from loader.images.record import MAX_RECORD_SIZE, TrustedRecord, parse_record
from loader.verity.level0 import FileRef
from loader.verity.verify import authenticate_tree, read_hash_area, verify_data

IMAGE_SUFFIX = ".img"
HASH_SUFFIX = ".verity"
RECORD_SUFFIX = ".roothash"
# What `appliance model pack` builds; anything else needs an explicit unsafe_ opt-in.
STANDARD_ALGORITHM = "sha256"
STANDARD_FORMAT = 1
STANDARD_BLOCK_SIZE = 4096

logger = logging.getLogger(__name__)
Progress = Callable[[float], None]


@dataclass(frozen=True)
class ModelImage:
    """A model's files under models-dir, resolved to real paths inside it."""

    name: str
    image_path: Path
    hash_path: Path


class _Release:
    """Runs a cleanup once, however often close() is called, from whichever thread."""

    def __init__(self, cleanup: Callable[[], None]) -> None:
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._cleanup()


@dataclass(frozen=True)
class VerifiedModel:
    """A directory of verified model files for the engine, and the record that vouches for it."""

    path: Path
    record: TrustedRecord
    _release: Callable[[], None] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_release", _Release(self._release))

    @property
    def digest(self) -> str:
        """The lower-case hex root hash: the model digest in certificates, API and receipts."""
        return self.record.digest

    def close(self) -> None:
        """Release the files (remove private copies, or unmount and close the verity device)."""
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def resolve_model_image(models_dir: Path, name: str) -> ModelImage:
    """`<models-dir>/<name>.img` and `.verity`, refusing anything that leaves models-dir."""
    check_model_name(name)
    try:
        root = Path(models_dir).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise ModelNotFoundError(
            "models directory does not exist", actual=str(models_dir)
        ) from None
    paths = []
    for suffix in (IMAGE_SUFFIX, HASH_SUFFIX):
        candidate = root / f"{name}{suffix}"
        if not os.path.lexists(candidate):
            raise ModelNotFoundError(
                f"model {name!r} has no {suffix} file in the models directory",
                check="image",
                actual=str(candidate),
            )
        try:
            real = candidate.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise ModelNameError("dangling or looping symlink", actual=str(candidate)) from None
        if not real.is_relative_to(root):
            raise ModelNameError(
                "model file escapes the models directory",
                check="path",
                expected=f"inside {root}",
                actual=str(real),
            )
        if not stat.S_ISREG(real.stat().st_mode):
            raise ModelNameError("model file is not a regular file", check="path", actual=str(real))
        paths.append(real)
    return ModelImage(name=name, image_path=paths[0], hash_path=paths[1])


def load_record(
    roothash_dir: Path, name: str, *, unsafe_allow_nonstandard_params: bool = False
) -> TrustedRecord:
    """The trusted record for `name`; RecordError if it is missing, odd, or not what we build.

    Accepts only sha256, hash format 1 and 4 KiB blocks unless the caller opts out explicitly.
    """
    check_model_name(name)
    path = Path(roothash_dir) / f"{name}{RECORD_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise RecordError(
            "no trusted record for this model", check="record", actual=str(path)
        ) from None
    except OSError as error:
        # ELOOP: a symlink. The record directory is trusted configuration; links in it are odd.
        raise RecordError(
            f"cannot open trusted record: {error.strerror}", actual=str(path)
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError("trusted record is not a regular file", actual=str(path))
        raw = b""
        while len(raw) <= MAX_RECORD_SIZE and (
            piece := os.read(fd, MAX_RECORD_SIZE + 1 - len(raw))
        ):
            raw += piece
    finally:
        os.close(fd)
    record = parse_record(raw)
    if record.name != name:
        raise RecordError(
            "record belongs to another model", check="name", expected=name, actual=record.name
        )
    if not unsafe_allow_nonstandard_params:
        _require_standard_params(record)
    return record


def verify_model_image(
    image: ModelImage,
    record: TrustedRecord,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> None:
    """Check the image and hash files against the record without exposing anything.

    For operators (`appliance model verify`); the engine gets files from `materialize_verified`.
    """
    _verify_image(image, record, None, progress, workers)


def model_work_path(work_dir: Path, record: TrustedRecord) -> Path:
    """Where a verified model is presented to the engine: the same path for the same digest on
    every load, since vLLM derives `system_fingerprint` from the model path."""
    return Path(work_dir) / f"{record.name}-{record.digest}"


def materialize_verified(
    image: ModelImage,
    record: TrustedRecord,
    work_dir: Path,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> VerifiedModel:
    """Dev/CI verified access: a private, verified copy of the image, extracted read-only.

    No check-then-use gap: the tree is read once into memory and authenticated top-down; each
    data block is copied into a 0700 directory from the very buffer that was checked against
    it; the filesystem is then extracted from that private copy, which nobody else can change.
    Only data_blocks * data_block_size bytes exist in the copy.
    """
    Path(work_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    private = model_work_path(work_dir, record)
    if private.exists():  # left by a run that did not end cleanly: never reused unverified
        _remove_tree(private)
    private.mkdir(mode=0o700)
    try:
        copy = private / "image"
        _verify_image(image, record, copy, progress, workers)
        # The verified copy must hold the filesystem the record pins.
        copy_fd = os.open(copy, os.O_RDONLY | os.O_CLOEXEC)
        try:
            found = detect_filesystem(copy_fd)
        finally:
            os.close(copy_fd)
        if found != record.filesystem:
            raise ImageError(
                "verified image does not hold the pinned filesystem",
                check="filesystem",
                expected=record.filesystem,
                actual=found,
            )
        # Extract from the private copy, drop the copy, and make the files read-only.
        files = private / "model"
        extract_image(copy, record.filesystem, files)
        copy.unlink()
        make_read_only(files)
        # Only the read-only model is left: an engine running as its own user may pass through
        # to it (the work directory above is not listable to it; see prepare_state_dir).
        private.chmod(0o711)
    except BaseException:
        _remove_tree(private)
        raise
    logger.info("model %s verified in userspace, digest %s", image.name, record.digest)
    return VerifiedModel(path=files, record=record, _release=lambda: _remove_tree(private))


def _verify_image(
    image: ModelImage,
    record: TrustedRecord,
    copy: Path | None,
    progress: Progress | None,
    workers: int | None,
) -> None:
    params = record.params
    data_fd = os.open(image.image_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        hash_fd = os.open(image.hash_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            # 1. Same model, pinned sizes: a truncated or extended file is refused unhashed.
            check_files(image, record, data_fd, hash_fd)
            # 2. Read the hash area once (our private copy of the tree) and authenticate it
            #    top-down; an on-disk superblock must agree with every pinned field.
            tree = authenticate_tree(read_hash_area(hash_fd, params), params, record.root_hash)
        finally:
            os.close(hash_fd)
        source = FileRef.of(image.image_path, data_fd)
        if copy is None:
            verify_data(tree, source, workers=workers, progress=progress)
            return
        # 3. Copy every data block into private storage from the buffer it was verified in.
        out_fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(out_fd, params.data_size)
            sink = FileRef.of(copy, out_fd)
            verify_data(tree, source, workers=workers, progress=progress, sink=sink)
        finally:
            os.close(out_fd)
    finally:
        os.close(data_fd)


def check_files(image: ModelImage, record: TrustedRecord, data_fd: int, hash_fd: int) -> None:
    """The cheap checks before any hashing: one model, regular files of the pinned sizes."""
    if image.name != record.name:
        raise ParameterMismatchError(
            "image and record name different models",
            check="name",
            expected=record.name,
            actual=image.name,
        )
    for check, fd, expected in (
        ("image_size", data_fd, record.image_size),
        ("hash_size", hash_fd, record.hash_size),
    ):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ParameterMismatchError("not a regular file", check=check)
        if st.st_size != expected:
            raise ParameterMismatchError(
                f"file size differs from the trusted record's {check}",
                check=check,
                expected=expected,
                actual=st.st_size,
            )


def _require_standard_params(record: TrustedRecord) -> None:
    params = record.params
    for check, expected, actual in (
        ("hash_algorithm", STANDARD_ALGORITHM, params.hash_algorithm),
        ("hash_format", STANDARD_FORMAT, params.hash_format),
        ("data_block_size", STANDARD_BLOCK_SIZE, params.data_block_size),
        ("hash_block_size", STANDARD_BLOCK_SIZE, params.hash_block_size),
    ):
        if expected != actual:
            raise RecordError(
                f"record pins a {check} that model images do not use"
                " (unsafe_allow_nonstandard_params=True to accept)",
                check=check,
                expected=expected,
                actual=actual,
            )


def _remove_tree(path: Path) -> None:
    # make_read_only left 0555 directories; without write permission a non-root user could not
    # delete their entries.
    for directory, _, _ in os.walk(path):
        os.chmod(directory, 0o700)
    shutil.rmtree(path, ignore_errors=True)
