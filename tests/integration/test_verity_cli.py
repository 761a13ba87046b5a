"""`appliance verity ...` and `appliance model ...`: output, exit codes, agreement with
veritysetup."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from verity_helpers import veritysetup, write_random

from appliance.cli import main
from appliance.cli.progress import ProgressBar

UUID_TEXT = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
SALT_HEX = "5a" * 32


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.img"
    write_random(path, 1000 * 4096, seed=21)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def root_of(output: str) -> str:
    return next(
        line.split("\t")[1] for line in output.splitlines() if line.startswith("Root hash:")
    )


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--no-superblock"],
        ["--hash", "sha512", "--format", "0", "--hash-block-size", "1024"],
        ["--hash-offset", "8192", "--salt", "-"],
        ["--data-blocks", "300", "--data-block-size", "1024"],
    ],
    ids=["defaults", "no-superblock", "sha512-format0", "offset-no-salt", "data-blocks"],
)
def test_format_prints_what_veritysetup_prints(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path, options: list[str]
) -> None:
    fixed = ["--uuid", UUID_TEXT] + ([] if "--salt" in options else ["--salt", SALT_HEX])
    status, ours, _ = run(capsys, "verity", "format", data, tmp_path / "h", *options, *fixed)
    assert status == 0
    theirs = veritysetup("format", data, tmp_path / "h", *options, *fixed)
    assert theirs.returncode == 0
    if "--no-superblock" in options:
        theirs_out = theirs.stdout.replace(f"UUID:            \t{UUID_TEXT}", "UUID:            \t")
    else:
        theirs_out = theirs.stdout
    assert ours.strip() == theirs_out.strip()


def test_format_defaults_to_a_random_salt_and_uuid(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    _, first, _ = run(capsys, "verity", "format", data, tmp_path / "a")
    _, second, _ = run(capsys, "verity", "format", data, tmp_path / "b")
    assert root_of(first) != root_of(second)
    assert veritysetup("verify", data, tmp_path / "a", root_of(first)).returncode == 0


def test_verify_exit_codes(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    hash_file = tmp_path / "h"
    _, out, _ = run(capsys, "verity", "format", data, hash_file)
    root = root_of(out)

    status, out, _ = run(capsys, "verity", "verify", data, hash_file, root)
    assert status == 0 and "succeeded" in out

    wrong = ("0" if root[0] != "0" else "1") + root[1:]
    status, _, err = run(capsys, "verity", "verify", data, hash_file, wrong)
    assert status == 1 and "RootHashMismatchError" in err

    status, _, err = run(capsys, "verity", "verify", data, hash_file, "abcd")
    assert status == 1 and "root hash length" in err

    status, _, err = run(capsys, "verity", "verify", data, hash_file, root, "--hash", "sha1")
    assert status == 1 and "disagrees with the superblock" in err

    raw = bytearray(data.read_bytes())
    raw[123_456] ^= 1
    data.write_bytes(bytes(raw))
    status, _, err = run(capsys, "verity", "verify", data, hash_file, root)
    assert status == 2
    assert "DataCorruptionError" in err and f"byte offset {123_456 // 4096 * 4096}" in err
    assert veritysetup("verify", data, hash_file, root).returncode == 2


def test_verify_without_superblock_needs_the_parameters(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    hash_file = tmp_path / "h"
    _, out, _ = run(
        capsys, "verity", "format", data, hash_file, "--no-superblock", "--salt", SALT_HEX
    )
    root = root_of(out)
    status, _, _ = run(
        capsys, "verity", "verify", data, hash_file, root, "--no-superblock", "--salt", SALT_HEX
    )
    assert status == 0
    status, _, _ = run(capsys, "verity", "verify", data, hash_file, root, "--no-superblock")
    assert status == 1  # no salt: another root


def test_verify_of_a_corrupted_tree_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "small-blocks.img"
    write_random(data, 300 * 512, seed=5)
    hash_file = tmp_path / "h"
    sizes = [
        "--data-block-size",
        "512",
        "--hash-block-size",
        "512",
    ]  # three levels: 19, 2, 1 blocks
    _, out, _ = run(capsys, "verity", "format", data, hash_file, *sizes)
    raw = bytearray(hash_file.read_bytes())
    raw[4 * 512 + 10] ^= 1  # level 0 starts at block 4 (superblock, top, two of level 1)
    hash_file.write_bytes(bytes(raw))
    status, _, err = run(capsys, "verity", "verify", data, hash_file, root_of(out))
    assert status == 2 and "HashTreeCorruptionError" in err and "byte 2048" in err
    assert veritysetup("verify", data, hash_file, root_of(out)).returncode == 2


def test_dump(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    hash_file = tmp_path / "h"
    run(capsys, "verity", "format", data, hash_file, "--uuid", UUID_TEXT)
    status, ours, _ = run(capsys, "verity", "dump", hash_file)
    assert status == 0
    assert ours.strip() == veritysetup("dump", hash_file).stdout.strip()
    status, _, err = run(capsys, "verity", "dump", data)
    assert status == 1 and "no verity superblock" in err


def test_format_refuses_bad_parameters(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    status, _, err = run(
        capsys, "verity", "format", data, tmp_path / "h", "--no-superblock", "--hash-offset", "4608"
    )
    assert status == 1 and "multiple of the hash block size" in err
    status, _, err = run(capsys, "verity", "format", data, tmp_path / "h", "--salt", "xyz")
    assert status == 1 and "salt" in err
    assert not (tmp_path / "h").exists()


def test_model_pack_and_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    write_random(source / "model.safetensors", 300_000, seed=1)
    (source / "sub" / "config.json").write_text("{}")
    dirs = ["--models-dir", tmp_path / "models", "--roothash-dir", tmp_path / "roots"]

    status, out, err = run(capsys, "model", "pack", source, "--name", "m", *dirs, "--fs", "erofs")
    assert status == 0, err
    record = json.loads((tmp_path / "roots" / "m.roothash").read_text())
    assert f"digest:   {record['root_hash']}" in out
    assert "pack m: hash tree: 100%" in err  # not a terminal: plain percentages

    status, out, _ = run(capsys, "model", "verify", "m", *dirs)
    assert status == 0 and record["root_hash"] in out

    image = tmp_path / "models" / "m.img"
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 1
    image.write_bytes(bytes(raw))
    status, _, err = run(capsys, "model", "verify", "m", *dirs)
    assert status == 2 and "DataCorruptionError" in err

    status, _, err = run(capsys, "model", "verify", "../m", *dirs)
    assert status == 1 and "ModelNameError" in err
    status, _, err = run(capsys, "model", "pack", source, "--name", "m", *dirs)
    assert status == 1 and "already exists" in err


def test_progress_bar_on_a_terminal_and_in_a_log() -> None:
    terminal, log = io.StringIO(), io.StringIO()
    for stream, tty in ((terminal, True), (log, False)):
        bar = ProgressBar("verify m", stream, tty=tty)
        for fraction in (0.0, 0.05, 0.5, 0.51, 1.0):
            bar(fraction)
        bar.finish()
    assert terminal.getvalue().split("\r")[1:] == [
        "verify m [..............................]   0%",
        "verify m [#.............................]   5%",
        "verify m [###############...............]  50%",
        "verify m [###############...............]  51%",
        "verify m [##############################] 100%\n",
    ]
    assert log.getvalue() == "verify m: 0%\nverify m: 50%\nverify m: 100%\n"
