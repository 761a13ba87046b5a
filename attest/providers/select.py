"""Pick the hardware quote provider and RTMR extender this kernel offers.

Never falls back to the simulated provider: a TD that cannot produce hardware evidence fails,
and simulated evidence is only ever used when the operator asks for it by name.
"""

from __future__ import annotations

from pathlib import Path

from attest.errors import ProviderUnavailableError
from attest.providers.base import QuoteProvider
from attest.providers.configfs_tsm import DEFAULT_TSM_REPORT_PATH, ConfigfsTsmProvider
from attest.providers.libtdx import DEFAULT_LIBRARY, LibTdxAttest
from attest.providers.tdx_guest import (
    DEFAULT_MEASUREMENTS_PATH,
    DEFAULT_TDX_GUEST_DEVICE,
    SysfsRtmrExtender,
    TdxGuestIoctlExtender,
)
from attest.rtmr import RtmrExtender


def tdx_quote_provider(
    *,
    tsm_report_path: Path = DEFAULT_TSM_REPORT_PATH,
    libtdx_library: str = DEFAULT_LIBRARY,
) -> QuoteProvider:
    """configfs-tsm when the kernel has it (Linux >= 6.7), else libtdx_attest."""
    if Path(tsm_report_path).is_dir():
        return ConfigfsTsmProvider(tsm_report_path)
    try:
        return LibTdxAttest(libtdx_library)
    except ProviderUnavailableError as exc:
        raise ProviderUnavailableError(
            f"no TDX quote interface: {tsm_report_path} does not exist and {exc}",
            check="tdx quote provider",
        ) from exc


def tdx_rtmr_extender(
    *,
    measurements_path: Path = DEFAULT_MEASUREMENTS_PATH,
    device: Path = DEFAULT_TDX_GUEST_DEVICE,
) -> RtmrExtender:
    """The sysfs measurement registers when present (Linux >= 6.16), else the device ioctl."""
    if Path(measurements_path).is_dir():
        return SysfsRtmrExtender(measurements_path)
    if Path(device).exists():
        return TdxGuestIoctlExtender(device)
    raise ProviderUnavailableError(
        f"no RTMR interface: neither {measurements_path} nor {device} exists",
        check="rtmr extender",
    )
