"""`appliance simulated quote|collateral`, verified by `appliance quote verify --root`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli import main
from attest.quote import parse_quote
from attest.simulated import SimulatedAuthority

AT = "2026-03-01T12:00:00Z"
REPORT_DATA = "ab" * 64


@pytest.fixture
def evidence(tmp_path: Path, capsys) -> dict[str, Path]:
    authority = tmp_path / "authority"
    quote, collateral = tmp_path / "quote.bin", tmp_path / "collateral.json"
    assert main(["simulated", "quote", "--authority", str(authority), "--at", AT,
                 "--report-data", REPORT_DATA, "-o", str(quote)]) == 0  # fmt: skip
    assert main(["simulated", "collateral", "--authority", str(authority), "--at", AT,
                 "-o", str(collateral)]) == 0  # fmt: skip
    assert "SIMULATED evidence" in capsys.readouterr().err
    return {"authority": authority, "quote": quote, "collateral": collateral}


def verify(evidence: dict[str, Path], root: Path | None) -> int:
    args = ["quote", "verify", "--json", "--at", AT, "--collateral", str(evidence["collateral"])]
    if root is not None:
        args += ["--root", str(root)]
    return main([*args, str(evidence["quote"])])


def test_simulated_evidence_verifies_against_its_root_and_says_so(evidence, capsys):
    assert parse_quote(evidence["quote"].read_bytes()).body.report_data.hex() == REPORT_DATA
    assert verify(evidence, evidence["authority"] / "root-ca.pem") == 0
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    assert result["simulated"] is True
    assert result["tcb_status"] == "UpToDate"


def test_simulated_evidence_fails_against_intels_root(evidence, capsys):
    assert verify(evidence, None) != 0
    assert "root_ca_crl.signature" in capsys.readouterr().out


def test_the_authority_persists_between_commands(evidence):
    first = SimulatedAuthority.load(evidence["authority"]).root_der
    assert main(["simulated", "quote", "--authority", str(evidence["authority"]),
                 "-o", str(evidence["quote"])]) == 0  # fmt: skip
    assert SimulatedAuthority.load(evidence["authority"]).root_der == first


def test_bad_report_data_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["simulated", "quote", "--authority", str(tmp_path), "--report-data", "abcd"])
    assert caught.value.code == 2


def test_unusable_authority_directory_exits_1(tmp_path, capsys):
    (tmp_path / "stray").write_text("not an authority")
    assert main(["simulated", "quote", "--authority", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err
