"""The tdx_guest driver's RTMR extenders: what they would send to the kernel.

Not runnable here (no TD), so a directory stands in for sysfs and an injected `ioctl` records the
command number and request bytes.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from attest.errors import RtmrExtendError
from attest.providers.tdx_guest import SysfsRtmrExtender, TdxGuestIoctlExtender

# _IOR('T', 3, 49): direction 2 in bits 30-31, size 49 in bits 16-29, 'T' = 0x54, number 3.
EXPECTED_IOCTL = 0x80315403


def test_sysfs_extender_writes_exactly_the_digest_to_the_register_file(tmp_path: Path):
    register = tmp_path / "rtmr3:sha384"
    register.write_bytes(b"")
    digest = hashlib.sha384(b"model").digest()

    SysfsRtmrExtender(tmp_path).extend(3, digest)

    assert register.read_bytes() == digest


def test_sysfs_extender_never_creates_the_register_file(tmp_path: Path):
    with pytest.raises(RtmrExtendError, match="rtmr2:sha384"):
        SysfsRtmrExtender(tmp_path).extend(2, bytes(48))
    assert list(tmp_path.iterdir()) == []


class RecordingIoctl:
    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.error = error

    def __call__(self, fd: int, command: int, request: bytearray) -> int:
        self.calls.append((command, bytes(request)))
        if self.error:
            raise self.error
        return 0


def test_ioctl_extender_sends_tdx_cmd_extend_rtmr_with_data_then_index(tmp_path: Path):
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    ioctl = RecordingIoctl()
    digest = hashlib.sha384(b"model").digest()

    TdxGuestIoctlExtender(device, ioctl=ioctl).extend(3, digest)

    assert ioctl.calls == [(EXPECTED_IOCTL, digest + b"\x03")]


def test_ioctl_extender_explains_a_kernel_without_the_command(tmp_path: Path):
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    ioctl = RecordingIoctl(OSError(errno.ENOTTY, "Inappropriate ioctl for device"))
    with pytest.raises(RtmrExtendError, match="kernel without TDX_CMD_EXTEND_RTMR"):
        TdxGuestIoctlExtender(device, ioctl=ioctl).extend(2, bytes(48))


def test_ioctl_extender_refuses_bad_requests_before_opening_the_device(tmp_path: Path):
    ioctl = RecordingIoctl()
    with pytest.raises(RtmrExtendError, match="only RTMR2 and RTMR3"):
        TdxGuestIoctlExtender(tmp_path / "absent", ioctl=ioctl).extend(1, bytes(48))
    with pytest.raises(RtmrExtendError, match="cannot open"):
        TdxGuestIoctlExtender(tmp_path / "absent", ioctl=ioctl).extend(3, bytes(48))
    assert ioctl.calls == []
