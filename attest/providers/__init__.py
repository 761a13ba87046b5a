"""Quote providers: configfs-tsm, libtdx_attest, and (in `attest.simulated`) a simulated TD.
RTMR extenders: the tdx_guest driver's sysfs files or ioctl, and libtdx_attest.

Every provider has `tee` ("tdx" or "simulated") and `get_quote(report_data) -> bytes`; every
extender has `extend(index, digest)` (`attest.rtmr.RtmrExtender`). This package holds the kernel
and library I/O; `attest.rtmr` holds the pure event-log replay.
"""

from attest.providers.base import QuoteProvider, TeeName, require_report_data
from attest.providers.configfs_tsm import ConfigfsTsmProvider, TsmFilesystem
from attest.providers.libtdx import LibTdxAttest
from attest.providers.select import tdx_quote_provider, tdx_rtmr_extender
from attest.providers.tdx_guest import SysfsRtmrExtender, TdxGuestIoctlExtender
from attest.quote import REPORT_DATA_SIZE

__all__ = [
    "REPORT_DATA_SIZE",
    "ConfigfsTsmProvider",
    "LibTdxAttest",
    "QuoteProvider",
    "SysfsRtmrExtender",
    "TdxGuestIoctlExtender",
    "TeeName",
    "TsmFilesystem",
    "require_report_data",
    "tdx_quote_provider",
    "tdx_rtmr_extender",
]
