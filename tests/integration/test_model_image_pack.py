"""Model images end to end: pack -> resolve -> record -> verified files, with real tools.

mksquashfs / mkfs.erofs build the image, our code the tree and record, veritysetup checks the
result independently, and unsquashfs / fsck.erofs extract the verified private copy. Engine
settings given to the pack (library and `appliance model pack`) land in the record, version 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from pathlib import Path

import pytest
from verity_helpers import veritysetup

from appliance.cli import main
from loader.errors import (
    DataCorruptionError,
    HashTreeCorruptionError,
    ImageError,
    ParameterMismatchError,
    RecordError,
    RootHashMismatchError,
)
from loader.images.engine_settings import ModelEngineSettings
from loader.images.model_image import (
    load_record,
    materialize_verified,
    resolve_model_image,
    verify_model_image,
)
from loader.images.pack import pack_model

FILESYSTEMS = ["squashfs", "erofs"]


def make_model_dir(root: Path, seed: int, scale: int = 1) -> dict[str, str]:
    """A small model-like tree: nested folders, a large and a few small files, a symlink."""
    rng = random.Random(seed)
    files = {
        "config.json": json.dumps({"model_type": "llama", "seed": seed}).encode(),
        "tokenizer.json": rng.randbytes(20_000),
        "model.safetensors": rng.randbytes(600_000 * scale),
        "nested/deeper/shard-00001.bin": rng.randbytes(150_000 * scale),
        "nested/empty.txt": b"",
    }
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "nested" / "config-link.json").symlink_to("../config.json")
    return {relative: hashlib.sha256(content).hexdigest() for relative, content in files.items()}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("src", "models", "roots", "work")}
    out["src"].mkdir()
    return out


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_pack_then_materialize_gives_the_source_files(
    filesystem: str, dirs: dict[str, Path]
) -> None:
    expected = make_model_dir(dirs["src"], seed=1)
    packed = pack_model(
        dirs["src"], "tiny-llama", dirs["models"], dirs["roots"], filesystem=filesystem
    )

    image = resolve_model_image(dirs["models"], "tiny-llama")
    record = load_record(dirs["roots"], "tiny-llama")
    assert record == packed.record
    assert record.filesystem == filesystem
    assert record.image_size == image.image_path.stat().st_size == record.params.data_size
    seen: list[float] = []
    model = materialize_verified(image, record, dirs["work"], progress=seen.append)
    try:
        assert model.digest == record.root_hash.hex()
        assert file_digests(model.path) == expected
        assert os.readlink(model.path / "nested" / "config-link.json") == "../config.json"
        for path in model.path.rglob("*"):
            if not path.is_symlink():
                assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path
        private = model.path.parent
        # Traversable once only the read-only model is left (an engine user passes through).
        assert stat.S_IMODE(private.stat().st_mode) == 0o711
        assert sorted(p.name for p in private.iterdir()) == ["model"]  # the image copy is gone
        assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    finally:
        model.close()
    assert not model.path.exists()
    assert list(dirs["work"].iterdir()) == []
    model.close()  # idempotent


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_packed_model_verifies_with_veritysetup(filesystem: str, dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=2)
    packed = pack_model(dirs["src"], "m", dirs["models"], dirs["roots"], filesystem=filesystem)
    done = veritysetup(
        "verify", packed.image.image_path, packed.image.hash_path, packed.record.digest
    )
    assert done.returncode == 0, done.stderr
    dump = veritysetup("dump", packed.image.hash_path).stdout
    assert f"Data blocks:     \t{packed.record.params.data_blocks}" in dump
    assert f"Salt:            \t{packed.record.params.salt.hex()}" in dump


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_packing_is_reproducible(filesystem: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_model_dir(src, seed=3)
    first = pack_model(src, "m", tmp_path / "a", tmp_path / "ra", filesystem=filesystem)
    for path in src.rglob("*"):  # new timestamps must not change a byte
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    second = pack_model(src, "m", tmp_path / "b", tmp_path / "rb", filesystem=filesystem)
    assert first.record == second.record
    for suffix in (".img", ".verity"):
        assert (tmp_path / "a" / f"m{suffix}").read_bytes() == (
            tmp_path / "b" / f"m{suffix}"
        ).read_bytes()
    assert (tmp_path / "ra" / "m.roothash").read_bytes() == (
        tmp_path / "rb" / "m.roothash"
    ).read_bytes()


def test_different_content_gives_a_different_salt_and_root(tmp_path: Path) -> None:
    for name, seed in (("a", 4), ("b", 5)):
        (tmp_path / name).mkdir()
        make_model_dir(tmp_path / name, seed=seed)
    a = pack_model(tmp_path / "a", "a", tmp_path / "models", tmp_path / "roots")
    b = pack_model(tmp_path / "b", "b", tmp_path / "models", tmp_path / "roots")
    assert a.record.params.salt != b.record.params.salt
    assert a.record.root_hash != b.record.root_hash


def test_pack_refuses_to_overwrite_unless_asked(dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=6)
    pack_model(dirs["src"], "m", dirs["models"], dirs["roots"])
    with pytest.raises(ImageError, match="already exists"):
        pack_model(dirs["src"], "m", dirs["models"], dirs["roots"])
    pack_model(dirs["src"], "m", dirs["models"], dirs["roots"], replace=True)
    assert sorted(p.name for p in dirs["models"].iterdir()) == ["m.img", "m.verity"]
    assert sorted(p.name for p in dirs["roots"].iterdir()) == ["m.roothash"]


def test_pack_refuses_a_symlink_leaving_the_source(dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=7)
    (dirs["src"] / "escape").symlink_to("/etc/passwd")
    with pytest.raises(ImageError, match="outside"):
        pack_model(dirs["src"], "m", dirs["models"], dirs["roots"])
    assert not dirs["models"].exists() and not dirs["roots"].exists()


def test_pack_refuses_special_files(dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=8)
    os.mkfifo(dirs["src"] / "pipe")
    with pytest.raises(ImageError, match="only files"):
        pack_model(dirs["src"], "m", dirs["models"], dirs["roots"])


@pytest.fixture
def packed(dirs: dict[str, Path]):
    make_model_dir(dirs["src"], seed=9)
    pack_model(dirs["src"], "victim", dirs["models"], dirs["roots"])
    return dirs


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x20
    path.write_bytes(bytes(raw))


def _load(dirs: dict[str, Path], name: str = "victim"):
    return resolve_model_image(dirs["models"], name), load_record(dirs["roots"], name)


def test_tampered_image_is_refused_and_nothing_is_left(packed: dict[str, Path]) -> None:
    image, record = _load(packed)
    offset = image.image_path.stat().st_size // 2 + 77
    _flip(image.image_path, offset)
    with pytest.raises(DataCorruptionError) as caught:
        materialize_verified(image, record, packed["work"])
    assert caught.value.offset == offset // 4096 * 4096
    assert list(packed["work"].iterdir()) == []
    with pytest.raises(DataCorruptionError):
        verify_model_image(image, record)


def test_tampered_tree_is_refused(packed: dict[str, Path]) -> None:
    image, record = _load(packed)
    geometry = record.params.geometry
    _flip(image.hash_path, geometry.level_offset(0) + 100)
    expected = HashTreeCorruptionError if geometry.levels > 1 else RootHashMismatchError
    with pytest.raises(expected):
        materialize_verified(image, record, packed["work"])


@pytest.mark.parametrize("change", ["truncate", "extend"])
def test_image_of_another_size_is_refused(packed: dict[str, Path], change: str) -> None:
    image, record = _load(packed)
    with open(image.image_path, "r+b") as f:
        if change == "truncate":
            f.truncate(record.image_size - 4096)
        else:
            f.seek(0, os.SEEK_END)
            f.write(bytes(4096))
    with pytest.raises(ParameterMismatchError) as caught:
        materialize_verified(image, record, packed["work"])
    assert caught.value.check == "image_size"


def test_extended_hash_file_is_refused(packed: dict[str, Path]) -> None:
    image, record = _load(packed)
    with open(image.hash_path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ParameterMismatchError) as caught:
        materialize_verified(image, record, packed["work"])
    assert caught.value.check == "hash_size"


def test_record_swapped_with_another_models(packed: dict[str, Path]) -> None:
    other = packed["src"].parent / "other-src"
    other.mkdir()
    make_model_dir(other, seed=10, scale=2)
    pack_model(other, "other", packed["models"], packed["roots"])
    victim_record = packed["roots"] / "victim.roothash"
    other_record = packed["roots"] / "other.roothash"
    # 1. Copied as is: the record names another model.
    victim_record.write_bytes(other_record.read_bytes())
    with pytest.raises(RecordError) as caught:
        load_record(packed["roots"], "victim")
    assert (caught.value.check, caught.value.expected, caught.value.actual) == (
        "name",
        "victim",
        "other",
    )
    # 2. With its name edited to match: the other model's parameters and root do not fit.
    document = json.loads(other_record.read_text())
    document["name"] = "victim"
    victim_record.write_text(json.dumps(document))
    image, record = _load(packed)
    with pytest.raises(ParameterMismatchError):
        materialize_verified(image, record, packed["work"])
    # 3. And the other model's files under the victim's name verify only as the other model.
    for suffix in (".img", ".verity"):
        os.replace(packed["models"] / f"other{suffix}", packed["models"] / f"victim{suffix}")
    image, record = _load(packed)
    with materialize_verified(image, record, packed["work"]) as model:
        assert model.digest == json.loads(other_record.read_text())["root_hash"]


def test_image_holding_another_filesystem_is_refused(packed: dict[str, Path]) -> None:
    document = json.loads((packed["roots"] / "victim.roothash").read_text())
    document["filesystem"] = "erofs"
    (packed["roots"] / "victim.roothash").write_text(json.dumps(document))
    image, record = _load(packed)
    with pytest.raises(ImageError) as caught:
        materialize_verified(image, record, packed["work"])
    assert (caught.value.expected, caught.value.actual) == ("erofs", "squashfs")
    assert list(packed["work"].iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_a_few_hundred_mib_with_nested_folders(filesystem: str, dirs: dict[str, Path]) -> None:
    rng = random.Random(12)
    expected = {}
    for index in range(12):
        relative = f"layer-{index % 3}/block-{index % 2}/weights-{index:02d}.safetensors"
        content = rng.randbytes(24 << 20)
        path = dirs["src"] / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        expected[relative] = hashlib.sha256(content).hexdigest()
    (dirs["src"] / "config.json").write_text("{}")
    expected["config.json"] = hashlib.sha256(b"{}").hexdigest()

    pack_model(dirs["src"], "big", dirs["models"], dirs["roots"], filesystem=filesystem)
    image, record = _load(dirs, "big")
    assert record.image_size > 280 << 20
    with materialize_verified(image, record, dirs["work"]) as model:
        assert file_digests(model.path) == expected


def test_the_same_digest_gets_the_same_path_and_a_leftover_is_not_reused(
    dirs: dict[str, Path],
) -> None:
    make_model_dir(dirs["src"], seed=3)
    pack_model(dirs["src"], "tiny-llama", dirs["models"], dirs["roots"])
    image = resolve_model_image(dirs["models"], "tiny-llama")
    record = load_record(dirs["roots"], "tiny-llama")
    first = materialize_verified(image, record, dirs["work"])
    first_path = first.path
    first.close()
    leftover = first_path.parent
    leftover.mkdir()
    (leftover / "planted").write_text("not from the image")
    second = materialize_verified(image, record, dirs["work"])
    try:
        assert second.path == first_path  # same digest, same path
        assert not (second.path.parent / "planted").exists()  # extracted afresh
    finally:
        second.close()


# -- engine settings in the record ---------------------------------------------------------------

MINILM = ModelEngineSettings(
    max_model_len=256, runner="pooling", dtype="float32",
    args=("--max-num-seqs=8", "--enable-prefix-caching"),
)


def test_pack_pins_engine_settings_in_a_version_2_record(dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=13)
    packed = pack_model(dirs["src"], "minilm", dirs["models"], dirs["roots"], engine=MINILM)
    written = json.loads((dirs["roots"] / "minilm.roothash").read_text())
    assert written["version"] == 2
    assert written["engine"] == {
        "max_model_len": 256, "runner": "pooling", "dtype": "float32",
        "args": ["--max-num-seqs=8", "--enable-prefix-caching"],
    }
    record = load_record(dirs["roots"], "minilm")
    assert record == packed.record and record.engine == MINILM
    assert record.record_digest == packed.record.record_digest
    # The settings change the record, never the image: the same files verify.
    with materialize_verified(resolve_model_image(dirs["models"], "minilm"), record,
                              dirs["work"]) as model:
        assert model.record.engine == MINILM


def test_pack_without_settings_writes_version_1(dirs: dict[str, Path]) -> None:
    make_model_dir(dirs["src"], seed=14)
    pack_model(dirs["src"], "m", dirs["models"], dirs["roots"])
    written = json.loads((dirs["roots"] / "m.roothash").read_text())
    assert written["version"] == 1 and "engine" not in written


def test_record_digest_is_reproducible_and_follows_the_settings(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_model_dir(src, seed=15)
    first = pack_model(src, "m", tmp_path / "a", tmp_path / "ra", engine=MINILM)
    again = pack_model(src, "m", tmp_path / "b", tmp_path / "rb", engine=MINILM)
    other = pack_model(src, "m", tmp_path / "c", tmp_path / "rc",
                       engine=ModelEngineSettings(max_model_len=512))
    assert first.record.record_digest == again.record.record_digest
    assert first.record.digest == other.record.digest  # same image, same root hash
    assert first.record.record_digest != other.record.record_digest


def pack_command(dirs: dict[str, Path], *options: str) -> list[str]:
    return ["model", "pack", str(dirs["src"]), "--name", "minilm",
            "--models-dir", str(dirs["models"]), "--roothash-dir", str(dirs["roots"]), *options]


def test_cli_pack_writes_the_engine_settings(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    make_model_dir(dirs["src"], seed=16)
    status = main(pack_command(
        dirs, "--max-model-len", "256", "--runner", "pooling", "--dtype", "bfloat16",
        "--engine-arg=--max-num-seqs=8", "--engine-arg=--no-enable-prefix-caching",
    ))
    out, err = capsys.readouterr()
    assert status == 0, err
    record = load_record(dirs["roots"], "minilm")
    assert record.engine == ModelEngineSettings(
        256, "pooling", "bfloat16", ("--max-num-seqs=8", "--no-enable-prefix-caching")
    )
    assert ("engine:   --max-model-len=256 --runner=pooling --dtype=bfloat16 --max-num-seqs=8 "
            "--no-enable-prefix-caching") in out
    assert f"version 2, record digest {record.record_digest}" in out


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--engine-arg=--trust-remote-code"], "--trust-remote-code"),
        (["--engine-arg=--host=0.0.0.0"], "--host"),
        (["--engine-arg=--max-num-seqs=8", "--engine-arg=--max-num-seqs=9"], "--max-num-seqs"),
        (["--engine-arg=max-num-seqs=8"], "max-num-seqs=8"),
        (["--engine-arg=--max-model-len=256"], "--max-model-len"),
        (["--max-model-len", "0"], "max_model_len"),
    ],
    ids=["trust remote code", "host", "duplicate", "without dashes", "field as an arg", "zero"],
)
def test_cli_pack_refuses_disallowed_settings_and_writes_nothing(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], options: list[str], named: str
) -> None:
    make_model_dir(dirs["src"], seed=17)
    status = main(pack_command(dirs, *options))
    _, err = capsys.readouterr()
    assert status == 2
    assert "engine settings refused, nothing written" in err and named in err
    assert not dirs["models"].exists() and not dirs["roots"].exists()
