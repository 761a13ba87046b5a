"""`appliance collateral fetch|simulate`, run in-process against a loopback PCS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fake_pcs import FakePcs

from appliance.cli import main

AT = "2026-01-10T00:00:00Z"


@pytest.fixture
def pcs(vectors_dir: Path):
    with FakePcs(vectors_dir / "tdx" / "collateral" / "tinfoil-verifier" / "2025-12-17") as server:
        yield server


def fetch(pcs: FakePcs, tmp_path: Path, *extra: str) -> int:
    return main(
        ["collateral", "fetch", "--pccs", pcs.url, "--cache-dir", str(tmp_path / "cache"),
         "--at", AT, "-o", str(tmp_path / "bundle.json"), *extra]
    )  # fmt: skip


def test_fetch_by_fmspc_writes_the_bundle_and_offline_reuses_the_cache(pcs, tmp_path, vectors_dir):
    assert fetch(pcs, tmp_path, "--fmspc", "90c06f000000") == 0
    expected = json.loads((vectors_dir / "tdx/assembled/tinfoil_90c06f_2025-12.json").read_text())
    assert json.loads((tmp_path / "bundle.json").read_text()) == expected
    assert pcs.total_requests == 4

    (tmp_path / "bundle.json").unlink()
    assert fetch(pcs, tmp_path, "--fmspc", "90c06f000000", "--offline") == 0
    assert json.loads((tmp_path / "bundle.json").read_text()) == expected
    assert pcs.total_requests == 4


def test_fetch_takes_fmspc_and_ca_from_a_quote(pcs, tmp_path, vectors_dir, capsys):
    quote = vectors_dir / "tdx/quotes/dstack_verifier_quote-report_v4.bin"
    assert fetch(pcs, tmp_path, "--quote", str(quote)) == 0
    assert "FMSPC 90c06f000000" in capsys.readouterr().err
    assert pcs.requests["/sgx/certification/v4/pckcrl"] == 1


def test_fetch_failures_exit_1_with_the_reason(pcs, tmp_path, capsys):
    assert fetch(pcs, tmp_path, "--fmspc", "90c06f000000", "--offline") == 1
    assert "offline" in capsys.readouterr().err
    assert fetch(pcs, tmp_path, "--fmspc", "112233445566") == 1
    assert "answered HTTP 404" in capsys.readouterr().err
    assert not (tmp_path / "bundle.json").exists()


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["collateral", "fetch", "--fmspc", "90c06f000000", "--at", "yesterday"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["collateral", "fetch", "--at", AT])
    assert caught.value.code == 2
