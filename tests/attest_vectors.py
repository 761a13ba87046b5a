"""The shared TDX vectors by MANIFEST name: quotes, collateral bundles, verification rows.

Read at import so that tests can be parametrized by vector; a missing vectors directory fails
collection loudly (see `conftest.VECTORS`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from support.vectors import VECTORS

from attest.collateral import Collateral
from attest.collateral_load import collateral_from_bundle_json

MANIFEST: dict = json.loads((VECTORS / "MANIFEST.json").read_text())
QUOTE_NAMES: list[str] = sorted(MANIFEST["quotes"])
BUNDLE_NAMES: list[str] = [b["name"] for b in MANIFEST["collateral_bundles"]]
EVALUATED_ROWS: list[dict] = [row for row in MANIFEST["verification"] if "skipped" not in row]

# The base case of the negative tests (MANIFEST `negative_tests_context`).
BASE_QUOTE = "dcapqvl_tdx_quote_v4.bin"
BASE_BUNDLE = "dcapqvl_b0c06f_2025-06"
V5_QUOTE = "gotdxguest_quote_v5_sample.bin"
V5_BUNDLE = "tinfoil_90c06f_2026-01"
TRAILING_DATA_QUOTE = "gotdxguest_tdx_prod_quote_SPR_E4_v4.bin"


def quote_bytes(name: str) -> bytes:
    return (VECTORS / MANIFEST["quotes"][name]["file"]).read_bytes()


def bundle_path(name: str) -> Path:
    return VECTORS / "tdx" / "assembled" / f"{name}.json"


@cache
def bundle(name: str) -> Collateral:
    return collateral_from_bundle_json(bundle_path(name).read_text())


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def row_id(row: dict) -> str:
    return f"{row['quote'].removesuffix('.bin')}@{row['bundle']}"


def first_row(quote: str, bundle_name: str | None = None) -> dict:
    return next(
        r for r in EVALUATED_ROWS if r["quote"] == quote and bundle_name in (None, r["bundle"])
    )


def row_time(quote: str, bundle_name: str) -> datetime:
    return at(first_row(quote, bundle_name)["now_unix"])
