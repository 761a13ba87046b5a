"""The trusted record `<roothash-dir>/<name>.roothash`: a model's root hash and every parameter.

A root hash alone does not pin the data size or the tree's shape (docs/verity.md §3.8.1), so the
record pins all of them, plus the sizes of the image and hash files, and (version 2) the model's
engine settings. Format: one JSON object, UTF-8, strictly typed, no unknown or duplicate keys,
lower-case hex, a version number:

    {
      "format": "appliance-verity-record",
      "version": 2,
      "name": "tiny-llama",
      "root_hash": "<hex, the digest size of hash_algorithm>",
      "hash_algorithm": "sha256",
      "hash_format": 1,
      "data_block_size": 4096,
      "hash_block_size": 4096,
      "data_blocks": 25600,
      "salt": "<hex, 0..256 bytes; empty string for no salt>",
      "hash_offset": 0,
      "superblock": true,
      "uuid": "<canonical lower-case UUID of the superblock, or null without one>",
      "filesystem": "squashfs",
      "image_size": 104857600,
      "hash_size": 937984,
      "engine": {"max_model_len": 2048, "runner": null, "dtype": "bfloat16",
                 "args": ["--max-num-seqs=8"]}
    }

`image_size` must equal data_blocks * data_block_size: nothing outside the protected range is ever
read. `hash_size` is the exact size of the hash file. `engine` (loader.images.engine_settings) is
optional in version 2 and absent from version 1, which still loads, with vLLM's defaults. A record
is written as version 1 when it pins no engine setting, so that older loaders still read it.

`record_digest` names the whole record: SHA-256 of its canonical form (`canonical_bytes`: the
record as parsed, re-serialised as compact JSON with sorted keys). The file's whitespace and key
order do not change it; any field, engine settings included, does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loader.errors import ModelNameError, RecordError, VerityParamsError
from loader.images.engine_settings import NO_ENGINE_SETTINGS, EngineDocument, ModelEngineSettings
from loader.images.names import check_model_name
from loader.verity.params import VerityParams

RECORD_FORMAT = "appliance-verity-record"
PLAIN_RECORD_VERSION = 1
ENGINE_RECORD_VERSION = 2  # the first with engine settings
RECORD_VERSIONS = (PLAIN_RECORD_VERSION, ENGINE_RECORD_VERSION)
MAX_RECORD_SIZE = 64 * 1024
FILESYSTEMS = ("squashfs", "erofs")
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class TrustedRecord:
    name: str
    root_hash: bytes
    params: VerityParams
    filesystem: str
    image_size: int
    hash_size: int
    engine: ModelEngineSettings = NO_ENGINE_SETTINGS

    def __post_init__(self) -> None:
        _check_consistent(self)

    @property
    def digest(self) -> str:
        """The model digest used everywhere else: the lower-case hex root hash."""
        return self.root_hash.hex()

    @property
    def version(self) -> int:
        return ENGINE_RECORD_VERSION if self.engine.pinned else PLAIN_RECORD_VERSION

    @property
    def record_digest(self) -> str:
        """SHA-256 of `canonical_bytes`, lower-case hex: what pins this record, for measurement."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def canonical_bytes(self) -> bytes:
        """The canonical form: compact JSON, keys sorted, ASCII only."""
        return json.dumps(
            self.to_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    def to_json(self) -> str:
        """The record file as `appliance model pack` writes it, for people to review."""
        return json.dumps(self.to_document(), indent=2) + "\n"

    def to_document(self) -> dict[str, Any]:
        p = self.params
        document: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "version": self.version,
            "name": self.name,
            "root_hash": self.root_hash.hex(),
            "hash_algorithm": p.hash_algorithm,
            "hash_format": p.hash_format,
            "data_block_size": p.data_block_size,
            "hash_block_size": p.hash_block_size,
            "data_blocks": p.data_blocks,
            "salt": p.salt.hex(),
            "hash_offset": p.hash_offset,
            "superblock": p.superblock,
            "uuid": str(p.uuid) if p.uuid is not None else None,
            "filesystem": self.filesystem,
            "image_size": self.image_size,
            "hash_size": self.hash_size,
        }
        if self.engine.pinned:
            document["engine"] = self.engine.to_document()
        return document


class _RecordDocument(BaseModel):
    """The JSON boundary: types only. Meaning is checked by TrustedRecord and VerityParams."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    format: Literal["appliance-verity-record"]
    version: int
    name: str
    root_hash: str
    hash_algorithm: str
    hash_format: int
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: str
    hash_offset: int
    superblock: bool
    uuid: str | None
    filesystem: Literal["squashfs", "erofs"]
    image_size: int
    hash_size: int
    engine: EngineDocument = Field(default_factory=EngineDocument)


def parse_record(raw: bytes) -> TrustedRecord:
    """Parse a record; RecordError on anything that is not exactly a valid version-1 or
    version-2 record."""
    if len(raw) > MAX_RECORD_SIZE:
        raise RecordError(
            "record too large", check="size", expected=f"<= {MAX_RECORD_SIZE}", actual=len(raw)
        )
    try:
        data = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_refuse_duplicate_keys,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise RecordError(f"record is not valid UTF-8 JSON: {error}", check="json") from None
    if not isinstance(data, dict):
        raise RecordError("record is not a JSON object", check="json")
    version = data.get("version")
    if type(version) is int and version not in RECORD_VERSIONS:
        raise RecordError(
            "unsupported record version", check="version", expected=RECORD_VERSIONS,
            actual=version,
        )
    if type(version) is int and version == PLAIN_RECORD_VERSION and "engine" in data:
        raise RecordError(
            "engine settings need a version-2 record", check="engine",
            expected=f"version {ENGINE_RECORD_VERSION}", actual=f"version {version}",
        )
    try:
        document = _RecordDocument.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "record"
        raise RecordError(f"record field {field}: {first['msg']}", check=field) from None
    if document.version not in RECORD_VERSIONS:
        raise RecordError(
            "unsupported record version",
            check="version",
            expected=RECORD_VERSIONS,
            actual=document.version,
        )
    root_hash = _hex_field("root_hash", document.root_hash)
    salt = _hex_field("salt", document.salt)
    uuid = None
    if document.uuid is not None:
        if not _CANONICAL_UUID.fullmatch(document.uuid):
            raise RecordError(
                "uuid must be a canonical lower-case UUID", check="uuid", actual=document.uuid
            )
        uuid = UUID(document.uuid)
    try:
        params = VerityParams(
            data_blocks=document.data_blocks,
            hash_algorithm=document.hash_algorithm,
            hash_format=document.hash_format,
            data_block_size=document.data_block_size,
            hash_block_size=document.hash_block_size,
            salt=salt,
            hash_offset=document.hash_offset,
            superblock=document.superblock,
            uuid=uuid,
        )
    except VerityParamsError as error:
        raise RecordError(
            f"record holds invalid verity parameters: {error}", check=error.check
        ) from None
    return TrustedRecord(
        name=document.name,
        root_hash=root_hash,
        params=params,
        filesystem=document.filesystem,
        image_size=document.image_size,
        hash_size=document.hash_size,
        engine=document.engine.settings(),
    )


def _check_consistent(record: TrustedRecord) -> None:
    if not isinstance(record.engine, ModelEngineSettings):
        raise RecordError(
            "engine settings of the wrong type", check="engine",
            expected=ModelEngineSettings.__name__, actual=type(record.engine).__name__,
        )
    try:
        check_model_name(record.name)
    except ModelNameError as error:
        raise RecordError(f"record names an invalid model: {error}", check="name") from None
    params = record.params
    if len(record.root_hash) != params.digest_size:
        raise RecordError(
            f"root hash length does not fit {params.hash_algorithm}",
            check="root_hash",
            expected=f"{params.digest_size} bytes",
            actual=f"{len(record.root_hash)} bytes",
        )
    if params.superblock and params.uuid is None:
        raise RecordError("a record with a superblock must pin its uuid", check="uuid")
    if record.filesystem not in FILESYSTEMS:
        raise RecordError("unknown filesystem", check="filesystem", actual=record.filesystem)
    # Only the protected range may exist: a partial tail block would be readable but unverified.
    if record.image_size != params.data_size:
        raise RecordError(
            "image_size must equal data_blocks \N{MULTIPLICATION SIGN} data_block_size",
            check="image_size",
            expected=params.data_size,
            actual=record.image_size,
        )
    if record.hash_size < params.geometry.tree_end:
        raise RecordError(
            "hash_size is smaller than the hash tree",
            check="hash_size",
            expected=f">= {params.geometry.tree_end}",
            actual=record.hash_size,
        )


def _hex_field(field: str, value: str) -> bytes:
    if not _LOWER_HEX.fullmatch(value):
        raise RecordError(f"{field} must be lower-case hex", check=field, actual=value[:80])
    return bytes.fromhex(value)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
