"""Start-up reconciliation pieces (loader.activator.recovery): the mount table, device names,
`dmsetup ls` and which leftovers are ours (their teardown is DmVerityActivator.tear_down, tested
with the activation). Commands go to a fake runner (no device-mapper here); the mount table is
this machine's real one, then crafted lines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from uuid import UUID

import pytest
from support.commands import FakeRunner
from support.mountinfo import mountinfo, mountinfo_line

from loader.activator.dm_verity import CommandResult, Mapping, device_name
from loader.activator.recovery import (
    find_leftovers,
    list_verity_devices,
    parse_device_name,
    parse_mountinfo,
    read_mountinfo,
)
from loader.errors import ActivationError, MountTableError
from loader.images.record import TrustedRecord
from loader.verity import VerityParams

OURS = "appliance-model-tiny-0123456789abcdef"


def test_this_machines_mount_table_parses() -> None:
    mounts = parse_mountinfo(read_mountinfo())
    by_point = {mount.mount_point: mount for mount in mounts}
    assert by_point["/"].root == "/"
    assert by_point["/proc"].fstype == "proc"
    assert all(mount.mount_point.startswith("/") for mount in mounts)


def test_escapes_are_undone_and_optional_fields_skipped() -> None:
    point = "/run/models/a b\tc\nd\\e"
    [*_, mount] = parse_mountinfo(
        mountinfo(mountinfo_line(40, point, "/dev/mapper/x y", optional="shared:7 master:1"))
    )
    assert (mount.mount_id, mount.parent_id) == (40, 1)
    assert (mount.mount_point, mount.source, mount.fstype) == (point, "/dev/mapper/x y", "squashfs")
    assert mount.mount_options == ("ro", "nosuid", "nodev", "noexec", "relatime")
    assert mount.super_options == ("ro",)
    [*_, bare] = parse_mountinfo(mountinfo(mountinfo_line(41, "/m", "src", optional="")))
    assert (bare.mount_point, bare.source) == ("/m", "src")


@pytest.mark.parametrize(
    "line",
    [
        b"40 1 253:40 / /x ro master:1 squashfs /dev/mapper/x ro",  # no "-" separator
        b"40 1 253:40 / /x ro - squashfs /dev/mapper/x",  # no super options
        b"40 1 253:40 / /x ro - squashfs /dev/mapper/x ro extra",
        b"40 1 253:40 / - squashfs /dev/mapper/x ro",  # "-" where the options belong
        b"x 1 253:40 / /x ro - squashfs /dev/mapper/x ro",
        b"40 1 253-40 / /x ro - squashfs /dev/mapper/x ro",
        b"",
    ],
)
def test_a_malformed_line_is_refused_with_its_number(line: bytes) -> None:
    with pytest.raises(MountTableError, match="mountinfo line 2 ") as caught:
        parse_mountinfo(mountinfo_line(21, "/", "/dev/vda1").encode() + line + b"\n")
    assert caught.value.check == "mountinfo"


def test_device_names_round_trip_and_only_ours_parse() -> None:
    params = VerityParams(data_blocks=300, salt=bytes(32), uuid=UUID(int=1))
    base = TrustedRecord("tiny", bytes(32), params, "squashfs", params.data_size, 20480)
    for name in ("tiny", "a-b", "Model.v2-0", "x" * 64):
        record = dataclasses.replace(base, name=name, root_hash=bytes(range(32)))
        assert parse_device_name(device_name(record)) == (name, record.digest[:16])
    for other in (
        "vg-root",
        "appliance-model-odd",
        "appliance-model-tiny-0123456789ABCDEF",  # upper case: not a digest prefix we write
        "appliance-model-tiny-0123456789abcde",
        "appliance-model-..-0123456789abcdef",
        "appliance-model-.hidden-0123456789abcdef",
        "appliance-model-a/b-0123456789abcdef",
        "xappliance-model-tiny-0123456789abcdef",
    ):
        assert parse_device_name(other) is None, other


@pytest.mark.parametrize(
    "listing",
    [
        f"vg-root\t(253:0)\n{OURS}\t(253:1)\n",
        f"vg-root\t(253, 0)\n{OURS}\t(253, 1)\n",  # older dmsetup
    ],
)
def test_dmsetup_listing_is_parsed(listing: str) -> None:
    runner = FakeRunner(stdout={"dmsetup ls": listing})
    assert list_verity_devices(runner) == ["vg-root", OURS]
    assert runner.calls == [["dmsetup", "ls", "--target", "verity"]]
    assert list_verity_devices(FakeRunner(stdout={"dmsetup ls": "No devices found\n"})) == []


def test_dmsetup_failures_and_surprises_are_errors() -> None:
    def failing(argv: object) -> CommandResult:
        return CommandResult(1, "", "Failure to communicate with kernel device-mapper driver.")

    with pytest.raises(ActivationError, match="device-mapper driver") as caught:
        list_verity_devices(failing)
    assert caught.value.check == "dmsetup ls"
    assert str(caught.value) == (
        "dmsetup ls failed with exit status 1: "
        "Failure to communicate with kernel device-mapper driver."
    )
    with pytest.raises(ActivationError, match="unexpected output") as caught:
        list_verity_devices(FakeRunner(stdout={"dmsetup ls": f"{OURS} (253:1)\n"}))
    assert caught.value.actual == f"{OURS} (253:1)"


def test_leftovers_are_our_devices_and_their_mounts_directly_under_the_mount_dir() -> None:
    mount_dir = Path("/run/appliance models")  # a space: escaped in the table
    other = "appliance-model-other-fedcba9876543210"
    mounts = parse_mountinfo(
        mountinfo(
            mountinfo_line(40, f"{mount_dir}/tiny.a", f"/dev/mapper/{OURS}"),
            mountinfo_line(41, f"{mount_dir}/tiny.b", f"/dev/mapper/{OURS}"),  # mounted twice
            mountinfo_line(42, "/mnt/tiny", f"/dev/mapper/{OURS}"),
            mountinfo_line(43, f"{mount_dir}/deep/er", f"/dev/mapper/{other}"),
            mountinfo_line(44, f"{mount_dir}/disk", "/dev/vdb"),
            mountinfo_line(45, f"{mount_dir}/odd", "/dev/mapper/appliance-model-odd"),
            mountinfo_line(46, str(mount_dir), f"/dev/mapper/{OURS}"),
        )
    )
    found = find_leftovers(mounts, ["vg-root", other, "appliance-model-odd"], mount_dir)
    assert found == [
        Mapping(other),
        Mapping(OURS, (mount_dir / "tiny.b", mount_dir / "tiny.a")),  # the later mount first
    ]
    assert find_leftovers(mounts[:3], [], mount_dir) == []
