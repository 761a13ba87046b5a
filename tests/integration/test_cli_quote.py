"""`appliance quote show|verify` as a real subprocess on the real vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attest_vectors import (
    BASE_BUNDLE,
    BASE_QUOTE,
    BUNDLE_NAMES,
    EVALUATED_ROWS,
    MANIFEST,
    TRAILING_DATA_QUOTE,
    VECTORS,
    at,
    bundle_path,
    row_time,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from attest.roots import intel_sgx_root_ca

APPLIANCE = Path(sys.executable).parent / "appliance"
REQUIRED_KEYS = {
    "verified",
    "tcb_status",
    "advisory_ids",
    "mr_td",
    "rtmr",
    "report_data",
    "debug",
    "simulated",
}
BASE_BUNDLE_PATH = bundle_path(BASE_BUNDLE)
BASE_AT = row_time(BASE_QUOTE, BASE_BUNDLE).strftime("%Y-%m-%dT%H:%M:%SZ")


def quote_path(name: str) -> str:
    return str(VECTORS / MANIFEST["quotes"][name]["file"])


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(APPLIANCE), "quote", *args], capture_output=True, text=True, timeout=60,
        check=False,
    )


def lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def verify(
    *quotes: str,
    collateral: str | Path = BASE_BUNDLE_PATH,
    at: str | None = BASE_AT,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    args = ["verify", *map(quote_path, quotes), "--collateral", str(collateral), "--json", *extra]
    return run(*args, *(["--at", at] if at else []))


def test_verified_quote_exits_0_with_the_documented_shape() -> None:
    result = verify(BASE_QUOTE)
    assert result.returncode == 0, result.stderr
    [line] = lines(result)
    assert line.keys() >= REQUIRED_KEYS
    assert line["verified"] is True and line["tcb_status"] == "UpToDate"
    assert line["mr_td"] == MANIFEST["quotes"][BASE_QUOTE]["mr_td"]
    assert line["report_data"] == MANIFEST["quotes"][BASE_QUOTE]["report_data"]
    assert len(line["rtmr"]) == 4 and line["debug"] is False and line["simulated"] is False
    assert {c["name"]: c["outcome"] for c in line["policy"]}["mr_td"] == "not_pinned"
    assert "error" not in line


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_every_evaluated_pair_through_the_cli(name: str) -> None:
    rows = [r for r in EVALUATED_ROWS if r["bundle"] == name]
    by_time: dict[int, list[dict]] = {}
    for row in rows:
        by_time.setdefault(row["now_unix"], []).append(row)
    for unix, group in by_time.items():
        result = verify(
            *(r["quote"] for r in group), collateral=bundle_path(name), at=at(unix).isoformat()
        )
        out = lines(result)
        assert len(out) == len(group)
        for row, line in zip(group, out, strict=True):
            reference = row["independent_intel_algorithm_reimpl"]
            # Default policy: UpToDate only, no advisories, no debug, SEPT_VE_DISABLE set.
            accepted = (
                reference.get("status") == "UpToDate"
                and not reference["advisory_ids"]
                and "error" not in row["dcap_qvl"]
            )
            assert line["verified"] is accepted, (row["quote"], line)
            assert line["tcb_status"] == reference.get("status")
            if not accepted:
                assert set(line["error"]) >= {"stage", "type", "message"}
        assert result.returncode == (0 if all(x["verified"] for x in out) else 1)


def test_mixed_results_exit_1_and_name_the_stage() -> None:
    result = verify(BASE_QUOTE, "trustee_tdx_quote_6.bin", "trustee_tdx_quote_4.bin")
    assert result.returncode == 1
    ok, wrong_fmspc, debug = lines(result)
    assert ok["verified"] is True
    assert wrong_fmspc["verified"] is False
    assert wrong_fmspc["error"]["stage"] == "verify"
    assert wrong_fmspc["error"]["type"] == "CollateralMismatchError"
    assert "FMSPC" in wrong_fmspc["error"]["message"]
    assert debug["verified"] is False and debug["debug"] is True


def test_policy_rejection_is_the_validate_stage() -> None:
    rows = [
        r
        for r in EVALUATED_ROWS
        if r["quote"] == "trustee_tdx_quote_4.bin"
        and r["independent_intel_algorithm_reimpl"].get("status") == "UpToDate"
    ]
    row = rows[0]
    result = verify(
        row["quote"], collateral=bundle_path(row["bundle"]), at=at(row["now_unix"]).isoformat()
    )
    [line] = lines(result)
    assert result.returncode == 1
    assert line["tcb_status"] == "UpToDate"
    assert line["error"]["stage"] == "validate" and line["error"]["type"] == "PolicyError"
    assert "td_attributes.debug" in line["error"]["message"]


def test_policy_file_pins_measurements(tmp_path: Path) -> None:
    mr_td = MANIFEST["quotes"][BASE_QUOTE]["mr_td"]
    good = tmp_path / "good.toml"
    good.write_text(f'mr_td = ["{mr_td}"]\n')
    result = verify(BASE_QUOTE, extra=("--policy", str(good)))
    assert result.returncode == 0, result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mr_td": ["00" * 48]}))
    result = verify(BASE_QUOTE, extra=("--policy", str(bad)))
    assert result.returncode == 1
    assert lines(result)[0]["error"]["type"] == "PolicyError"


def test_default_time_is_now_and_the_vectors_have_expired() -> None:
    result = verify(BASE_QUOTE, at=None)
    assert result.returncode == 1
    assert lines(result)[0]["error"]["type"] == "CollateralExpiredError"


def test_custom_root_makes_results_simulated(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Intel SGX Root CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2018, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    fake = tmp_path / "root.pem"
    fake.write_bytes(certificate.public_bytes(Encoding.PEM))
    [line] = lines(verify(BASE_QUOTE, extra=("--root", str(fake))))
    assert line["simulated"] is True and line["verified"] is False
    assert line["error"]["type"] == "CollateralSignatureError"
    intel = tmp_path / "intel.pem"
    intel.write_bytes(intel_sgx_root_ca().certificate.public_bytes(Encoding.PEM))
    [line] = lines(verify(BASE_QUOTE, extra=("--root", str(intel))))
    assert line["simulated"] is False and line["verified"] is True


def test_text_summary_is_one_line_per_quote() -> None:
    result = run(
        "verify",
        quote_path(BASE_QUOTE),
        quote_path("dcapqvl_tdx_quote_v4_2024.bin"),
        "--collateral",
        str(bundle_path(BASE_BUNDLE)),
        "--at",
        BASE_AT,
    )
    ok, fail = result.stdout.splitlines()
    assert ok.startswith("OK") and "UpToDate" in ok
    assert fail.startswith("FAIL") and "TcbLevelError" in fail
    assert result.returncode == 1


@pytest.mark.parametrize(
    "case",
    [
        "missing quote",
        "missing collateral",
        "malformed collateral",
        "bad --at",
        "bad policy",
        "unknown policy field",
        "missing root",
        "no --collateral",
        "no quotes",
        "unknown option",
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, case: str) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"tcb_info": 1}')
    typo = tmp_path / "typo.toml"
    typo.write_text("unsafe_allow_debg = true\n")
    base = [quote_path(BASE_QUOTE), "--collateral", str(bundle_path(BASE_BUNDLE)), "--at", BASE_AT]
    args = {
        "missing quote": [str(tmp_path / "nope.bin"), *base[1:]],
        "missing collateral": [base[0], "--collateral", str(tmp_path / "nope.json")],
        "malformed collateral": [base[0], "--collateral", str(broken)],
        "bad --at": [*base[:3], "--at", "the 5th of July"],
        "bad policy": [*base, "--policy", str(broken)],
        "unknown policy field": [*base, "--policy", str(typo)],
        "missing root": [*base, "--root", str(tmp_path / "root.pem")],
        "no --collateral": [base[0]],
        "no quotes": base[1:],
        "unknown option": [*base, "--allow-debug"],
    }[case]
    result = run("verify", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip()


def test_show() -> None:
    result = run("show", quote_path("gotdxguest_quote_v5_sample.bin"), "--json")
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    meta = MANIFEST["quotes"]["gotdxguest_quote_v5_sample.bin"]
    assert shown["header"]["version"] == 5 and shown["body_type"] == 3
    assert shown["td_report"]["mr_td"] == meta["mr_td"]
    assert shown["td_report"]["mr_service_td"] == "00" * 48
    assert shown["pck_chain"][0]["fmspc"] == meta["fmspc"]
    text = run("show", quote_path(BASE_QUOTE))
    assert (
        text.returncode == 0 and "mr_td: " + MANIFEST["quotes"][BASE_QUOTE]["mr_td"] in text.stdout
    )


def test_show_refuses_trailing_data_unless_unsafe() -> None:
    strict = run("show", quote_path(TRAILING_DATA_QUOTE), "--json")
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["error"]["type"] == "FormatError"
    relaxed = run("show", quote_path(TRAILING_DATA_QUOTE), "--json", "--unsafe-allow-trailing-data")
    assert relaxed.returncode == 0 and json.loads(relaxed.stdout)["padding_bytes"] == 39
    assert run("show", "/nonexistent").returncode == 2
