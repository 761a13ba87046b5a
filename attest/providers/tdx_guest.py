"""RTMR extension through the Linux TDX guest driver (`tdx_guest`), the kernel's two interfaces.

`SysfsRtmrExtender`: Linux >= 6.16 exposes each register as a file,
`/sys/devices/virtual/misc/tdx_guest/measurements/rtmrN:sha384`; a 48-byte write extends it.
`TdxGuestIoctlExtender`: `TDX_CMD_EXTEND_RTMR` on /dev/tdx_guest, in Intel's TDX guest kernels
that predate the sysfs interface.

Both validate the request with `attest.rtmr.require_extend_request` before touching the kernel;
`attest.providers.select.tdx_rtmr_extender` picks the one this kernel offers.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

from attest.errors import RtmrExtendError
from attest.rtmr import RTMR_SIZE, require_extend_request

DEFAULT_MEASUREMENTS_PATH = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
DEFAULT_TDX_GUEST_DEVICE = Path("/dev/tdx_guest")


class SysfsRtmrExtender:
    """Linux >= 6.16: writing 48 bytes to `rtmrN:sha384` runs TDG.MR.RTMR.EXTEND.

    Not runnable here (no TD); tests check the request against a directory standing in for sysfs.
    """

    def __init__(self, base: Path = DEFAULT_MEASUREMENTS_PATH) -> None:
        self._base = Path(base)

    def path(self, index: int) -> Path:
        return self._base / f"rtmr{index}:sha384"

    def extend(self, index: int, digest: bytes) -> None:
        index, digest = require_extend_request(index, digest)
        path = self.path(index)
        try:
            # The kernel takes exactly one 48-byte write at offset 0; no O_CREAT, no truncation.
            fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise RtmrExtendError(
                f"cannot open {path}: {exc.strerror or exc} (kernel without TDX measurement "
                "registers in sysfs, or not a TD)",
                check="rtmr sysfs",
            ) from exc
        try:
            written = os.write(fd, digest)
        except OSError as exc:
            raise RtmrExtendError(
                f"extending RTMR{index} through {path} failed: {exc.strerror or exc}",
                check="rtmr sysfs",
            ) from exc
        finally:
            os.close(fd)
        if written != RTMR_SIZE:
            raise RtmrExtendError(
                f"short write to {path}", check="rtmr sysfs", expected=RTMR_SIZE, actual=written
            )

    def read(self, index: int) -> bytes:
        """Current value of RTMR `index` (0..3)."""
        return self.path(index).read_bytes()[:RTMR_SIZE]


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


_IOC_READ = 2
# struct tdx_extend_rtmr_req { __u8 data[48]; __u8 index; } (Intel's TDX guest driver; never
# upstream, where sysfs replaced it). Intel's libtdx_attest declares the command _IOR.
EXTEND_RTMR_REQUEST = struct.Struct("=48sB")
TDX_CMD_EXTEND_RTMR = _ioc(_IOC_READ, "T", 3, EXTEND_RTMR_REQUEST.size)

IoctlFunction = Callable[[int, int, bytearray], object]


def encode_extend_request(index: int, digest: bytes) -> bytearray:
    index, digest = require_extend_request(index, digest)
    return bytearray(EXTEND_RTMR_REQUEST.pack(digest, index))


class TdxGuestIoctlExtender:
    """`TDX_CMD_EXTEND_RTMR` on /dev/tdx_guest, for kernels that predate the sysfs interface.

    Not runnable here; tests inject `ioctl` and check the command number and request bytes.
    """

    def __init__(
        self, device: Path = DEFAULT_TDX_GUEST_DEVICE, *, ioctl: IoctlFunction = fcntl.ioctl
    ) -> None:
        self._device = Path(device)
        self._ioctl = ioctl

    def extend(self, index: int, digest: bytes) -> None:
        request = encode_extend_request(index, digest)
        try:
            fd = os.open(self._device, os.O_RDWR)
        except OSError as exc:
            raise RtmrExtendError(
                f"cannot open {self._device}: {exc.strerror or exc}", check="tdx_guest device"
            ) from exc
        try:
            self._ioctl(fd, TDX_CMD_EXTEND_RTMR, request)
        except OSError as exc:
            hint = " (kernel without TDX_CMD_EXTEND_RTMR)" if exc.errno == errno.ENOTTY else ""
            raise RtmrExtendError(
                f"TDX_CMD_EXTEND_RTMR on RTMR{index} failed: {exc.strerror or exc}{hint}",
                check="tdx_guest ioctl",
            ) from exc
        finally:
            os.close(fd)
