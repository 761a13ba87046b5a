"""Resolving names under models-dir and reading records: no escapes, nothing odd accepted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import UUID

import pytest

from loader.errors import ModelNameError, ModelNotFoundError, RecordError
from loader.images.model_image import load_record, resolve_model_image
from loader.images.names import check_model_name
from loader.images.record import TrustedRecord
from loader.verity import VerityParams

VALID_NAMES = ["a", "A", "0", "tiny-llama", "Qwen2.5-0.5B-Instruct", "m_1.v2", "x" * 64]
INVALID_NAMES = [
    "", ".", "..", ".hidden", "-flag", "_x", "a/b", "/abs", "a\\b", "a..b", "x" * 65, "a b",
    "a\nb", "a\0b", "é", "name\n", "a:b", "../models/x",
]  # fmt: skip


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNameError) as caught:
        resolve_model_image(tmp_path, name)
    assert type(caught.value) is ModelNameError
    with pytest.raises(ModelNameError):
        load_record(tmp_path, name)


def test_non_string_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNameError):
        resolve_model_image(tmp_path, b"m")  # type: ignore[arg-type]


def _files(directory: Path, name: str) -> None:
    (directory / f"{name}.img").write_bytes(b"img")
    (directory / f"{name}.verity").write_bytes(b"hash")


def test_resolves_real_paths(tmp_path: Path) -> None:
    _files(tmp_path, "m")
    image = resolve_model_image(tmp_path, "m")
    assert (image.name, image.image_path, image.hash_path) == (
        "m",
        tmp_path.resolve() / "m.img",
        tmp_path.resolve() / "m.verity",
    )


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve_model_image(tmp_path, "absent")
    (tmp_path / "half.img").write_bytes(b"img")
    with pytest.raises(ModelNotFoundError, match=r".verity"):
        resolve_model_image(tmp_path, "half")
    with pytest.raises(ModelNotFoundError):
        resolve_model_image(tmp_path / "no-such-dir", "m")


def test_symlink_inside_models_dir_is_followed(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    _files(tmp_path / "store", "v1")
    (tmp_path / "m.img").symlink_to("store/v1.img")
    (tmp_path / "m.verity").symlink_to("store/v1.verity")
    assert (
        resolve_model_image(tmp_path, "m").image_path == (tmp_path / "store" / "v1.img").resolve()
    )


def test_symlink_escaping_models_dir_is_refused(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    models.mkdir()
    outside.mkdir()
    _files(outside, "m")
    (models / "m.img").symlink_to(outside / "m.img")
    (models / "m.verity").write_bytes(b"hash")
    with pytest.raises(ModelNameError, match="escapes"):
        resolve_model_image(models, "m")


def test_dangling_symlink_and_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m.img").symlink_to("nowhere.img")
    (tmp_path / "m.verity").write_bytes(b"hash")
    with pytest.raises(ModelNameError, match="dangling"):
        resolve_model_image(tmp_path, "m")
    (tmp_path / "d.img").mkdir()
    (tmp_path / "d.verity").write_bytes(b"hash")
    with pytest.raises(ModelNameError, match="regular file"):
        resolve_model_image(tmp_path, "d")


def _record(name: str, **param_fields: object) -> TrustedRecord:
    params = VerityParams(data_blocks=100, salt=b"s", uuid=UUID(int=7), **param_fields)
    hash_size = params.geometry.tree_end
    return TrustedRecord(
        name, bytes(params.digest_size), params, "squashfs", params.data_size, hash_size
    )


def test_load_record(tmp_path: Path) -> None:
    record = _record("m")
    (tmp_path / "m.roothash").write_text(record.to_json())
    assert load_record(tmp_path, "m") == record


def test_missing_record(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no trusted record"):
        load_record(tmp_path, "m")


def test_record_for_another_name(tmp_path: Path) -> None:
    (tmp_path / "m.roothash").write_text(_record("other").to_json())
    with pytest.raises(RecordError) as caught:
        load_record(tmp_path, "m")
    assert caught.value.check == "name"


def test_symlinked_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real.roothash").write_text(_record("m").to_json())
    (tmp_path / "m.roothash").symlink_to("real.roothash")
    with pytest.raises(RecordError):
        load_record(tmp_path, "m")


def test_non_regular_record_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.roothash")
    with pytest.raises(RecordError, match="regular file"):
        load_record(tmp_path, "m")
    (tmp_path / "d.roothash").mkdir()
    with pytest.raises(RecordError):
        load_record(tmp_path, "d")


@pytest.mark.parametrize(
    "fields",
    [
        {"hash_algorithm": "sha512"},
        {"hash_algorithm": "sha1"},
        {"hash_format": 0},
        {"data_block_size": 512},
        {"hash_block_size": 1024},
    ],
)
def test_nonstandard_parameters_need_an_unsafe_opt_in(tmp_path: Path, fields: dict) -> None:
    record = _record("m", **fields)
    (tmp_path / "m.roothash").write_text(record.to_json())
    with pytest.raises(RecordError, match="unsafe_allow_nonstandard_params") as caught:
        load_record(tmp_path, "m")
    assert caught.value.check == next(iter(fields))
    assert load_record(tmp_path, "m", unsafe_allow_nonstandard_params=True) == record


def test_record_file_is_json_with_the_documented_keys(tmp_path: Path) -> None:
    document = json.loads(_record("m").to_json())
    assert list(document) == [
        "format", "version", "name", "root_hash", "hash_algorithm", "hash_format",
        "data_block_size", "hash_block_size", "data_blocks", "salt", "hash_offset", "superblock",
        "uuid", "filesystem", "image_size", "hash_size",
    ]  # fmt: skip
