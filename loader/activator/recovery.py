"""What an activator that crashed left behind: found in the system, torn down, retried.

The activator keeps its table in memory, so a crash (not a clean stop) leaves its mounts and
verity devices in place and a restarted activator does not know them: the device name of a
model it activates again is taken. At start-up, before it serves, it looks for LEFTOVERS:

    * a mount directly under its mount dir whose source is `/dev/mapper/appliance-model-*`
      (from /proc/self/mountinfo), and
    * a verity device named `appliance-model-<name>-<digest[:16]>` (`dmsetup ls --target verity`),

and tears every one of them down with `DmVerityActivator.tear_down`, the path a release takes
too: umount, then `veritysetup close`. Nothing else is touched: not a mount outside the mount dir,
not a device whose name the activator could not have made.

Why tear down instead of adopting: a leftover mapping was made by an earlier run, and the only
account of its parameters is the kernel's table. Adopting it would mean re-checking root hash,
algorithm, backing files, data blocks, hash offset, salt and mount flags against the record, a
second verification path that must be exactly as strict as `veritysetup open --no-superblock` and
can only be tested on a dm-verity kernel. It is not needed either: an engine keeps reading a busy
leftover (the umount fails with EBUSY, so nothing is pulled from under it), and the next
activation after the engine stopped maps the model afresh, with pinned parameters. A leftover
that cannot be torn down stays STALE: `status` lists it with its last error, an activation of the
same (name, digest) retries the teardown and otherwise fails with StaleMappingError, and a
deactivate (or the stop) retries too. A failed deactivation of a live model is kept the same way.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loader.activator.dm_verity import DEVICE_PREFIX, CommandRunner, Mapping, command_error
from loader.errors import ActivationError, ModelNameError, MountTableError
from loader.images.names import check_model_name

MOUNTINFO = Path("/proc/self/mountinfo")
MAPPER_DIR = "/dev/mapper/"
# loader.activator.dm_verity.device_name(); the digest prefix is the last dash-separated part.
_DEVICE_NAME = re.compile(
    re.escape(DEVICE_PREFIX) + r"(?P<model>.+)-(?P<digest_prefix>[0-9a-f]{16})"
)
# `dmsetup ls`: "<name>\t(<major>:<minor>)"; older releases print "(<major>, <minor>)".
_DMSETUP_LS_LINE = re.compile(r"(?P<name>[^\t]+)\t\(\d+(?::|, )\d+\)")
_NO_DEVICES = "No devices found"
_OCTAL_ESCAPE = re.compile(rb"\\([0-3][0-7]{2})")  # one byte: \000 to \377

MountTableReader = Callable[[], bytes]

logger = logging.getLogger(__name__)


def read_mountinfo() -> bytes:
    return MOUNTINFO.read_bytes()


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (proc(5)); paths with the kernel's escapes undone."""

    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


def parse_mountinfo(raw: bytes) -> list[MountEntry]:
    """Every line, strictly: a table we cannot read is no basis for tearing anything down."""
    # Only "\n" ends a line: the kernel leaves "\r" and other controls in paths unescaped.
    lines = raw.removesuffix(b"\n").split(b"\n") if raw else []
    return [_parse_mount_line(line, number) for number, line in enumerate(lines, 1)]


def _parse_mount_line(line: bytes, number: int) -> MountEntry:
    # 1. ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    fields = line.split(b" ")
    try:
        separator = fields.index(b"-", 6)
    except ValueError:
        separator = -1
    if separator < 0 or len(fields) != separator + 4:
        raise MountTableError(
            f"mountinfo line {number} does not have the proc(5) fields", check="mountinfo",
            actual=_unescape(line)[:200],
        )  # fmt: skip
    mount_id, parent_id, device = fields[0], fields[1], fields[2]
    if not (mount_id.isdigit() and parent_id.isdigit() and re.fullmatch(rb"\d+:\d+", device)):
        raise MountTableError(
            f"mountinfo line {number} has malformed ids", check="mountinfo",
            actual=_unescape(line)[:200],
        )  # fmt: skip
    # 2. The kernel escapes space, tab, newline and backslash in paths as \ooo (octal).
    return MountEntry(
        mount_id=int(mount_id),
        parent_id=int(parent_id),
        root=_unescape(fields[3]),
        mount_point=_unescape(fields[4]),
        mount_options=tuple(_unescape(fields[5]).split(",")),
        fstype=_unescape(fields[separator + 1]),
        source=_unescape(fields[separator + 2]),
        super_options=tuple(_unescape(fields[separator + 3]).split(",")),
    )


def _unescape(field: bytes) -> str:
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda match: bytes([int(match[1], 8)]), field))


def parse_device_name(device: str) -> tuple[str, str] | None:
    """(model, digest prefix) of a device name the activator makes, else None."""
    match = _DEVICE_NAME.fullmatch(device)
    if match is None:
        return None
    try:
        check_model_name(match["model"])
    except ModelNameError:
        return None
    return match["model"], match["digest_prefix"]


def list_verity_devices(run: CommandRunner, dmsetup: str = "dmsetup") -> list[str]:
    result = run([dmsetup, "ls", "--target", "verity"])
    error = command_error(result, "dmsetup ls")
    if error is not None:
        raise error
    names = []
    for line in result.stdout.splitlines():
        if not line.strip() or line.strip() == _NO_DEVICES:
            continue
        match = _DMSETUP_LS_LINE.fullmatch(line)
        if match is None:
            raise ActivationError(
                "unexpected output from dmsetup ls", check="dmsetup ls", actual=line[:200]
            )
        names.append(match["name"])
    return names


def find_leftovers(
    mounts: Iterable[MountEntry], devices: Iterable[str], mount_dir: Path
) -> list[Mapping]:
    """The activator's mounts (children of `mount_dir`) and devices; nothing else."""
    found: dict[str, list[Path]] = {}
    for mount in mounts:
        device = mount.source.removeprefix(MAPPER_DIR)
        if device == mount.source or parse_device_name(device) is None:
            continue
        mount_point = Path(mount.mount_point)
        if mount_point.parent != mount_dir:
            logger.warning("leaving %s alone: mounted outside %s", device, mount_dir)
            continue
        found.setdefault(device, []).insert(0, mount_point)
    for device in devices:
        if parse_device_name(device) is not None:
            found.setdefault(device, [])
    return [Mapping(device, tuple(points)) for device, points in sorted(found.items())]
