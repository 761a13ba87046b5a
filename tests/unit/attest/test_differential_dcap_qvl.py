"""Differential test against dcap-qvl 0.7.0 on every (quote, bundle) pair of MANIFEST, including
the pairs MANIFEST skipped (PCK certificate newer than the collateral): same accept/reject, same
status and advisories where both accept.

dcap-qvl always applies its TD-attribute checks (debug, SEPT_VE_DISABLE); we compare it with our
DCAP verdict followed by a policy that keeps those checks and accepts any TCB status/advisory.
"""

from __future__ import annotations

import dcap_qvl
import pytest
from attest_vectors import (
    MANIFEST,
    TRAILING_DATA_QUOTE,
    at,
    bundle,
    bundle_path,
    quote_bytes,
    row_id,
)

from attest.errors import AttestError
from attest.policy import SAFE_TCB_STATUSES, UNSAFE_TCB_STATUSES, Policy, validate
from attest.quote import parse_quote
from attest.verify import DcapVerifier

WINDOW_END = {b["name"]: b["window_ts"][1] for b in MANIFEST["collateral_bundles"]}
ANY_STATUS = Policy(
    allowed_tcb_statuses=[s.value for s in SAFE_TCB_STATUSES],
    unsafe_allowed_tcb_statuses=[s.value for s in UNSAFE_TCB_STATUSES],
    unsafe_allow_any_advisory=True,
)
VERIFIER = DcapVerifier()


def pair_time(row: dict) -> int:
    return row.get("now_unix", WINDOW_END[row["bundle"]] - 60)


@pytest.mark.parametrize("row", MANIFEST["verification"], ids=row_id)
def test_same_verdict_as_dcap_qvl(row: dict) -> None:
    raw = quote_bytes(row["quote"])
    now = pair_time(row)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(bundle_path(row["bundle"]).read_text())
    try:
        theirs = dcap_qvl.verify(raw, collateral, now)
    except ValueError as exc:
        theirs = exc
    try:
        quote = parse_quote(raw, unsafe_allow_trailing_data=row["quote"] == TRAILING_DATA_QUOTE)
        ours = VERIFIER.verify(quote, bundle(row["bundle"]), now=at(now))
        validate(ours, ANY_STATUS)
    except AttestError as exc:
        ours = exc
    assert isinstance(theirs, ValueError) == isinstance(ours, AttestError), (theirs, ours)
    if not isinstance(ours, AttestError):
        assert ours.tcb_status.value == theirs.status
        assert sorted(ours.advisory_ids) == sorted(theirs.advisory_ids)


def test_skipped_pairs_are_included() -> None:
    assert sum("skipped" in row for row in MANIFEST["verification"]) == 16
