"""Production activation (veritysetup open + read-only mount) through a fake command runner.

Device-mapper does not exist on dev/CI kernels, so these tests check the exact commands: every
pinned parameter, --no-superblock, the root hash as an argument, the mount options, and the
teardown order, including after failures: one teardown for a release and for what a crashed
activator left (loader.activator.recovery). The real commands run only in a TDX guest.
"""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

import pytest
from support.commands import FakeRunner

from loader.activator.dm_verity import DmVerityActivator, Mapping
from loader.errors import ActivationError, ParameterMismatchError
from loader.images.model_image import ModelImage
from loader.images.record import TrustedRecord
from loader.verity import VerityParams, format_hash

OURS = "appliance-model-tiny-0123456789abcdef"


@pytest.fixture
def model(tmp_path: Path) -> tuple[ModelImage, TrustedRecord]:
    params = VerityParams(
        data_blocks=300,
        salt=bytes.fromhex("aa55" * 16),
        uuid=UUID("8e1f0c7a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"),
    )
    image = ModelImage("tiny", tmp_path / "tiny.img", tmp_path / "tiny.verity")
    image.image_path.write_bytes(os.urandom(params.data_size))
    tree = format_hash(image.image_path, image.hash_path, params)
    record = TrustedRecord(
        "tiny", tree.root_hash, params, "squashfs", params.data_size, image.hash_path.stat().st_size
    )
    return image, record


def test_opens_with_every_pinned_parameter_and_mounts_read_only(model, tmp_path: Path) -> None:
    image, record = model
    runner = FakeRunner()
    progress: list[float] = []
    verified = DmVerityActivator(run=runner).activate(
        image, record, tmp_path / "work", progress=progress.append
    )

    name = f"appliance-model-tiny-{record.digest[:16]}"
    assert runner.calls == [
        [
            "veritysetup", "open", str(image.image_path), name, str(image.hash_path), record.digest,
            "--no-superblock",
            "--hash", "sha256",
            "--format", "1",
            "--data-block-size", "4096",
            "--hash-block-size", "4096",
            "--data-blocks", "300",
            "--hash-offset", "4096",  # past the superblock, which is not trusted
            "--salt", "aa55" * 16,
        ],
        [
            "mount", "-t", "squashfs", "-o", "ro,nodev,nosuid,noexec",
            f"/dev/mapper/{name}", str(verified.path),
        ],
    ]  # fmt: skip
    assert "--root-hash-file" not in runner.calls[0]
    assert verified.path.is_dir()
    # The same path for the same digest on every load (vLLM's system_fingerprint hashes it).
    assert verified.path == tmp_path / "work" / f"tiny-{record.digest}"
    assert verified.digest == record.digest
    assert progress == [1.0]

    verified.close()
    verified.close()
    assert runner.calls[2:] == [["umount", str(verified.path)], ["veritysetup", "close", name]]
    assert not verified.path.exists()


def test_a_failed_release_raises_and_stops_where_it_failed(model, tmp_path: Path) -> None:
    image, record = model
    runner = FakeRunner()
    verified = DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    runner.fail = "umount"
    with pytest.raises(ActivationError, match="simulated failure") as caught:
        verified.close()
    assert (caught.value.check, caught.value.actual) == ("umount", str(verified.path))
    assert [call[0] for call in runner.calls[2:]] == ["umount"]  # the device stays mapped
    assert verified.path.is_dir()


def test_failed_mount_closes_the_device(model, tmp_path: Path) -> None:
    image, record = model
    runner = FakeRunner(fail="mount")
    with pytest.raises(ActivationError, match="simulated failure") as caught:
        DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    assert caught.value.check == "mount"
    assert [call[:2] for call in runner.calls] == [
        ["veritysetup", "open"],
        ["mount", "-t"],
        ["veritysetup", "close"],
    ]
    assert list((tmp_path / "work").iterdir()) == []


def test_failed_open_runs_nothing_else(model, tmp_path: Path) -> None:
    image, record = model
    runner = FakeRunner(fail="veritysetup open")
    with pytest.raises(ActivationError) as caught:
        DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    assert caught.value.check == "veritysetup open"
    assert [call[:2] for call in runner.calls] == [["veritysetup", "open"]]


def test_files_that_disagree_with_the_record_are_refused_before_any_command(
    model, tmp_path: Path
) -> None:
    image, record = model
    runner = FakeRunner()
    with open(image.image_path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ParameterMismatchError) as caught:
        DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    assert caught.value.check == "image_size"
    assert runner.calls == []


def test_tampered_superblock_is_refused_before_any_command(model, tmp_path: Path) -> None:
    image, record = model
    raw = bytearray(image.hash_path.read_bytes())
    raw[72] ^= 1  # data_blocks
    image.hash_path.write_bytes(bytes(raw))
    runner = FakeRunner()
    with pytest.raises(ParameterMismatchError) as caught:
        DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    assert caught.value.check == "data_blocks"
    assert runner.calls == []


def test_image_and_record_of_different_models(model, tmp_path: Path) -> None:
    image, record = model
    other = ModelImage("other", image.image_path, image.hash_path)
    with pytest.raises(ParameterMismatchError):
        DmVerityActivator(run=FakeRunner()).activate(other, record, tmp_path / "work")


def test_teardown_unmounts_then_closes_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    points = (tmp_path / "tiny.b", tmp_path / "tiny.a")
    for point in points:
        point.mkdir()
    runner = FakeRunner(fail=f"umount {points[1]}")
    tools = DmVerityActivator(run=runner)

    left, error = tools.tear_down(Mapping(OURS, points))
    assert left == Mapping(OURS, points[1:])
    assert error is not None and (error.check, error.actual) == ("umount", str(points[1]))
    assert not points[0].exists() and points[1].exists()

    runner.fail = "veritysetup close"
    left, error = tools.tear_down(left)
    assert left == Mapping(OURS, ()) and error is not None and error.check == "veritysetup close"
    assert not points[1].exists()

    runner.fail = None
    assert tools.tear_down(left) == (Mapping(OURS, (), mapped=False), None)
    assert runner.calls == [
        ["umount", str(points[0])],
        ["umount", str(points[1])],
        ["umount", str(points[1])],
        ["veritysetup", "close", OURS],
        ["veritysetup", "close", OURS],
    ]


def test_a_mount_point_still_in_use_is_refused(model, tmp_path: Path) -> None:
    image, record = model
    busy = tmp_path / "work" / f"tiny-{record.digest}"
    busy.mkdir(parents=True)
    (busy / "mounted-file").write_text("an earlier mount")
    runner = FakeRunner()
    with pytest.raises(ActivationError) as err:
        DmVerityActivator(run=runner).activate(image, record, tmp_path / "work")
    assert err.value.check == "mount point"
    assert runner.calls[-1][:2] == ["veritysetup", "close"]  # the device opened is closed again
