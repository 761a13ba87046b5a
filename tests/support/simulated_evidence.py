"""What the simulated-evidence tests share: the time, the REPORTDATA, and the v4 offsets
(docs/tdx-quotes.md §2-4, independent of attest.quote) of every region a verifier must protect."""

from __future__ import annotations

import datetime as dt
import hashlib

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
REPORT_DATA = hashlib.sha512(b"tls key binding").digest()

SIGNED_REGION = range(632)  # header and TD report body
REPORT_DATA_FIELD = range(568, 632)
MR_TD_FIELD = range(184, 232)
QUOTE_SIGNATURE = range(636, 700)
ATTESTATION_KEY = range(700, 764)
QE_REPORT = range(770, 1154)
QE_REPORT_SIGNATURE = range(1154, 1218)
PROTECTED_REGIONS = (
    SIGNED_REGION,
    QUOTE_SIGNATURE,
    ATTESTATION_KEY,
    QE_REPORT,
    QE_REPORT_SIGNATURE,
)
