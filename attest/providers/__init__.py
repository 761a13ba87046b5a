"""Quote providers: configfs-tsm, libtdx_attest, and (in `attest.simulated`) a simulated TD.

Every provider has `tee` ("tdx" or "simulated") and `get_quote(report_data) -> bytes`.
"""

from attest.providers.base import QuoteProvider, TeeName, require_report_data
from attest.providers.configfs_tsm import ConfigfsTsmProvider, TsmFilesystem
from attest.providers.libtdx import LibTdxAttest
from attest.providers.select import tdx_quote_provider, tdx_rtmr_extender
from attest.quote import REPORT_DATA_SIZE

__all__ = [
    "REPORT_DATA_SIZE",
    "ConfigfsTsmProvider",
    "LibTdxAttest",
    "QuoteProvider",
    "TeeName",
    "TsmFilesystem",
    "require_report_data",
    "tdx_quote_provider",
    "tdx_rtmr_extender",
]
