"""`appliance model pack`: a model directory -> filesystem image + hash tree + trusted record.

Deterministic end to end: the image is built reproducibly, and the salt and the superblock UUID
are derived from the image bytes, so packing the same directory twice gives the same three files
and the same root hash. Files are written under temporary names and renamed into place, the
record last: a model becomes loadable only once all of it is complete. Engine settings given to
the pack are pinned in the record (version 2); without any, the record stays version 1.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from loader.errors import ImageError
from loader.images.engine_settings import NO_ENGINE_SETTINGS, ModelEngineSettings
from loader.images.fsimage import FILESYSTEMS, build_image, check_tree
from loader.images.model_image import (
    HASH_SUFFIX,
    IMAGE_SUFFIX,
    RECORD_SUFFIX,
    STANDARD_BLOCK_SIZE,
    ModelImage,
)
from loader.images.names import check_model_name
from loader.images.record import TrustedRecord
from loader.verity.params import VerityParams
from loader.verity.tree import format_hash

_SALT_DOMAIN = b"appliance/model-image/verity-salt/v1\0"
_UUID_DOMAIN = b"appliance/model-image/verity-uuid/v1\0"

# Reports (stage, fraction of that stage), e.g. ("salt", 0.5).
PackProgress = Callable[[str, float], None]


@dataclass(frozen=True)
class PackedModel:
    image: ModelImage
    record: TrustedRecord
    record_path: Path


def derive_salt(image_path: Path) -> bytes:
    """32 bytes from the image content: unique per image, yet reproducible."""
    with open(image_path, "rb") as image:
        return hashlib.file_digest(image, lambda: hashlib.sha256(_SALT_DOMAIN)).digest()


def derive_uuid(salt: bytes) -> UUID:
    return UUID(bytes=hashlib.sha256(_UUID_DOMAIN + salt).digest()[:16], version=4)


def pack_model(
    source_dir: Path,
    name: str,
    models_dir: Path,
    roothash_dir: Path,
    *,
    filesystem: str = "squashfs",
    engine: ModelEngineSettings = NO_ENGINE_SETTINGS,
    replace: bool = False,
    workers: int | None = None,
    progress: PackProgress | None = None,
) -> PackedModel:
    check_model_name(name)
    if filesystem not in FILESYSTEMS:
        raise ImageError(
            "unknown filesystem", check="filesystem", expected=FILESYSTEMS, actual=filesystem
        )
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise ImageError("model source is not a directory", actual=str(source_dir))
    check_tree(source_dir)
    models_dir, roothash_dir = Path(models_dir), Path(roothash_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    roothash_dir.mkdir(parents=True, exist_ok=True)
    image_path = models_dir / f"{name}{IMAGE_SUFFIX}"
    hash_path = models_dir / f"{name}{HASH_SUFFIX}"
    record_path = roothash_dir / f"{name}{RECORD_SUFFIX}"
    if not replace:
        for path in (image_path, hash_path, record_path):
            if os.path.lexists(path):
                raise ImageError(
                    "model already exists (pass replace to overwrite)", actual=str(path)
                )

    def stage(label: str) -> Callable[[float], None]:
        return lambda fraction: progress(label, fraction) if progress else None

    with ExitStack() as cleanup:
        image_tmp = _temporary(models_dir, name, IMAGE_SUFFIX, cleanup)
        hash_tmp = _temporary(models_dir, name, HASH_SUFFIX, cleanup)
        record_tmp = _temporary(roothash_dir, name, RECORD_SUFFIX, cleanup)
        # 1. The filesystem image (reproducible flags; a multiple of 4 KiB).
        stage("image")(0.0)
        build_image(source_dir, image_tmp, filesystem)
        stage("image")(1.0)
        # 2. Salt and superblock UUID from the image bytes.
        stage("salt")(0.0)
        salt = derive_salt(image_tmp)
        stage("salt")(1.0)
        size = image_tmp.stat().st_size
        params = VerityParams(
            data_blocks=size // STANDARD_BLOCK_SIZE,
            hash_algorithm="sha256",
            hash_format=1,
            data_block_size=STANDARD_BLOCK_SIZE,
            hash_block_size=STANDARD_BLOCK_SIZE,
            salt=salt,
            hash_offset=0,
            superblock=True,
            uuid=derive_uuid(salt),
        )
        # 3. The hash tree, byte-identical to `veritysetup format` with these parameters.
        tree = format_hash(
            image_tmp, hash_tmp, params, workers=workers, progress=stage("hash tree")
        )
        record = TrustedRecord(
            name=name,
            root_hash=tree.root_hash,
            params=params,
            filesystem=filesystem,
            image_size=size,
            hash_size=hash_tmp.stat().st_size,
            engine=engine,
        )
        record_tmp.write_text(record.to_json())
        # 4. Durable, world-readable, then renamed into place with the record last.
        for path in (image_tmp, hash_tmp, record_tmp):
            _fsync(path)
            path.chmod(0o644)
        os.replace(image_tmp, image_path)
        os.replace(hash_tmp, hash_path)
        _fsync(models_dir)
        os.replace(record_tmp, record_path)
        _fsync(roothash_dir)
    return PackedModel(
        image=ModelImage(name=name, image_path=image_path.resolve(), hash_path=hash_path.resolve()),
        record=record,
        record_path=record_path,
    )


def _temporary(directory: Path, name: str, suffix: str, cleanup: ExitStack) -> Path:
    fd, raw = tempfile.mkstemp(prefix=f".{name}{suffix}.", suffix=".tmp", dir=directory)
    os.close(fd)
    path = Path(raw)
    cleanup.callback(lambda: path.unlink(missing_ok=True))
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
