"""The validate stage: default policy on real verified quotes, each field both ways, loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from attest_vectors import (
    BASE_BUNDLE,
    BASE_QUOTE,
    EVALUATED_ROWS,
    V5_BUNDLE,
    V5_QUOTE,
    at,
    bundle,
    quote_bytes,
    row_id,
    row_time,
)

from attest.collateral_documents import TcbStatus
from attest.errors import PolicyError, PolicyFormatError
from attest.policy import MEASUREMENT_FIELDS, CheckOutcome, Policy, load_policy, validate
from attest.verify import DcapVerifier, VerifiedQuote

VERIFIER = DcapVerifier()


def verified(quote: str, bundle_name: str) -> VerifiedQuote:
    return VERIFIER.verify(
        quote_bytes(quote), bundle(bundle_name), now=row_time(quote, bundle_name)
    )


@pytest.fixture(scope="module")
def base() -> VerifiedQuote:
    return verified(BASE_QUOTE, BASE_BUNDLE)


def with_body(result: VerifiedQuote, **changes) -> VerifiedQuote:
    body = dataclasses.replace(result.quote.body, **changes)
    return dataclasses.replace(result, quote=dataclasses.replace(result.quote, body=body))


def rejected_check(result: VerifiedQuote, policy: Policy) -> str:
    with pytest.raises(PolicyError) as info:
        validate(result, policy)
    assert info.value.stage == "validate"
    return info.value.check


# --- MANIFEST: where dcap-qvl refuses on TD attributes, our default policy refuses -------------

TD_ATTRIBUTE_REFUSALS = {
    "Debug mode is enabled": "td_attributes.debug",
    "SEPT_VE_DISABLE is not enabled": "td_attributes.sept_ve_disable",
}
ATTRIBUTE_ROWS = [
    r
    for r in EVALUATED_ROWS
    if any(text in r["dcap_qvl"].get("error", "") for text in TD_ATTRIBUTE_REFUSALS)
]


@pytest.mark.parametrize("row", ATTRIBUTE_ROWS, ids=row_id)
def test_default_policy_refuses_what_dcap_qvl_refuses_on_td_attributes(row: dict) -> None:
    result = VERIFIER.verify(
        quote_bytes(row["quote"]), bundle(row["bundle"]), now=at(row["now_unix"])
    )
    expected = next(
        check for text, check in TD_ATTRIBUTE_REFUSALS.items() if text in row["dcap_qvl"]["error"]
    )
    assert rejected_check(result, Policy()) == expected


def test_attribute_rows_were_found() -> None:
    assert len(ATTRIBUTE_ROWS) == 4


def test_default_policy_accepts_an_up_to_date_production_td(base: VerifiedQuote) -> None:
    outcome = validate(base, Policy())
    assert outcome.not_pinned == (*MEASUREMENT_FIELDS, "report_data")
    assert outcome.unsafe_allowed == ()
    names = [c.name for c in outcome.checks]
    assert names[:6] == [
        "td_attributes.debug",
        "td_attributes.reserved",
        "td_attributes.sept_ve_disable",
        "mr_service_td",
        "tcb_status",
        "advisory_ids",
    ]
    assert all(c.outcome in (CheckOutcome.PASSED, CheckOutcome.NOT_PINNED) for c in outcome.checks)


# --- each field accepts and rejects -------------------------------------------------------------


def measurement(result: VerifiedQuote, field: str) -> bytes:
    body = result.quote.body
    return body.rtmr[int(field[-1])] if field.startswith("rtmr") else getattr(body, field)


@pytest.mark.parametrize("field", MEASUREMENT_FIELDS)
def test_measurement_allowlists(base: VerifiedQuote, field: str) -> None:
    actual = measurement(base, field)
    other = bytes(b ^ 0xFF for b in actual)
    outcome = validate(base, Policy.from_mapping({field: [other.hex(), actual.hex()]}))
    assert next(c for c in outcome.checks if c.name == field).outcome is CheckOutcome.PASSED
    assert rejected_check(base, Policy.from_mapping({field: [other.hex()]})) == field
    assert rejected_check(base, Policy.from_mapping({field: []})) == field  # empty: nothing allowed


def test_report_data(base: VerifiedQuote) -> None:
    actual = base.quote.body.report_data
    assert (
        validate(base, Policy().with_report_data(actual)).checks[-1].outcome is CheckOutcome.PASSED
    )
    assert rejected_check(base, Policy().with_report_data(bytes(64))) == "report_data"
    with pytest.raises(PolicyFormatError):
        Policy().with_report_data(bytes(32))


def test_tcb_status(base: VerifiedQuote) -> None:
    out_of_date = verified("trustee_tdx_quote_6.bin", "tinfoil_00a06d_2025-12")
    assert out_of_date.tcb_status is TcbStatus.OUT_OF_DATE
    assert rejected_check(out_of_date, Policy()) == "tcb_status"
    outcome = validate(out_of_date, Policy(unsafe_allowed_tcb_statuses=["OutOfDate"]))
    assert outcome.unsafe_allowed == ("tcb_status",)
    for status in ("SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
        graded = dataclasses.replace(base, tcb_status=TcbStatus(status))
        assert rejected_check(graded, Policy()) == "tcb_status"
        validate(graded, Policy(allowed_tcb_statuses=["UpToDate", status]))
    stale = dataclasses.replace(base, tcb_status=TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED)
    assert rejected_check(stale, Policy(unsafe_allowed_tcb_statuses=["OutOfDate"])) == "tcb_status"
    assert rejected_check(base, Policy(allowed_tcb_statuses=[])) == "tcb_status"


@pytest.mark.parametrize(
    "document",
    [
        {"allowed_tcb_statuses": ["OutOfDate"]},
        {"allowed_tcb_statuses": ["Revoked"]},
        {"unsafe_allowed_tcb_statuses": ["Revoked"]},
        {"unsafe_allowed_tcb_statuses": ["UpToDate"]},
        {"allowed_tcb_statuses": ["uptodate"]},
    ],
)
def test_status_lists_are_constrained(document: dict) -> None:
    with pytest.raises(PolicyFormatError):
        Policy.from_mapping(document)


def test_advisories() -> None:
    advised = verified("teekit_tdx-v4-edgeless.bin", "teekit-tcb+dcapqvl-near_00806f_2025-09")
    ids = list(advised.advisory_ids)
    assert ids == ["INTEL-SA-00837", "INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]
    base_policy = {"unsafe_allowed_tcb_statuses": ["OutOfDate"]}
    assert rejected_check(advised, Policy.from_mapping(base_policy)) == "advisory_ids"
    assert (
        rejected_check(
            advised, Policy.from_mapping({**base_policy, "allowed_advisory_ids": ids[:3]})
        )
        == "advisory_ids"
    )
    validate(advised, Policy.from_mapping({**base_policy, "allowed_advisory_ids": ids}))
    outcome = validate(
        advised, Policy.from_mapping({**base_policy, "unsafe_allow_any_advisory": True})
    )
    assert "advisory_ids" in outcome.unsafe_allowed


def test_debug_td() -> None:
    debug = verified("trustee_tdx_quote_4.bin", "gotdxguest_50806f_2023-06")
    assert debug.tcb_status is TcbStatus.UP_TO_DATE and debug.quote.body.debug
    assert rejected_check(debug, Policy()) == "td_attributes.debug"
    assert validate(debug, Policy(unsafe_allow_debug=True)).unsafe_allowed == (
        "td_attributes.debug",
    )


def test_other_tud_bits_count_as_debug(base: VerifiedQuote) -> None:
    profiling = with_body(base, td_attributes=(0x10000010).to_bytes(8, "little"))  # bit 4
    assert rejected_check(profiling, Policy()) == "td_attributes.debug"


def test_reserved_td_attribute_bits(base: VerifiedQuote) -> None:
    reserved = with_body(base, td_attributes=(0x10000000 | 1 << 40).to_bytes(8, "little"))
    assert rejected_check(reserved, Policy()) == "td_attributes.reserved"
    validate(reserved, Policy(unsafe_allow_reserved_td_attributes=True))
    # Known, non-debug features are not "reserved": PKS, PERFMON as in real quotes.
    validate(
        with_body(base, td_attributes=(0x10000000 | 1 << 30 | 1 << 63).to_bytes(8, "little")),
        Policy(),
    )


def test_sept_ve_disable_required() -> None:
    azure = verified("teekit_tdx-v4-azure.bin", "teekit-tcb+dcapqvl-near_00806f_2025-09")
    assert rejected_check(azure, Policy()) == "td_attributes.sept_ve_disable"
    assert validate(azure, Policy(unsafe_allow_sept_ve=True)).unsafe_allowed == (
        "td_attributes.sept_ve_disable",
    )


def test_mr_service_td_for_td15() -> None:
    td15 = verified(V5_QUOTE, V5_BUNDLE)
    check = next(c for c in validate(td15, Policy()).checks if c.name == "mr_service_td")
    assert check.outcome is CheckOutcome.PASSED and check.actual == "00" * 48
    bound = with_body(td15, mr_service_td=b"\x01" * 48)
    assert rejected_check(bound, Policy()) == "mr_service_td"
    validate(bound, Policy(unsafe_allow_service_td=True))


def test_policy_error_carries_every_check(base: VerifiedQuote) -> None:
    with pytest.raises(PolicyError) as info:
        validate(base, Policy(mr_td=[bytes(48)], rtmr3=[]))
    error = info.value
    assert error.check == "mr_td" and error.actual == base.quote.body.mr_td.hex()
    assert [c.name for c in error.checks if c.outcome is CheckOutcome.FAILED] == ["mr_td", "rtmr3"]
    assert error.checks[0].to_dict()["outcome"] == "passed"


# --- loading ------------------------------------------------------------------------------------


def test_toml_and_json_load_the_same_policy(tmp_path: Path, base: VerifiedQuote) -> None:
    mr_td = base.quote.body.mr_td.hex()
    toml_path = tmp_path / "policy.toml"
    toml_path.write_text(
        f'mr_td = ["{mr_td}"]\nrtmr3 = ["{"00" * 48}"]\n'
        'allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]\n'
        "unsafe_allow_debug = false\n"
    )
    json_path = tmp_path / "policy.json"
    json_path.write_text(
        json.dumps(
            {
                "mr_td": [mr_td],
                "rtmr3": ["00" * 48],
                "allowed_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
                "unsafe_allow_debug": False,
            }
        )
    )
    assert load_policy(toml_path) == load_policy(json_path)
    validate(base, load_policy(toml_path))


@pytest.mark.parametrize(
    "text",
    [
        "allow_debug = true",  # relaxations only under their `unsafe_` names
        "debug = true",
        "unsafe_allow_debg = true",  # a typo must not silently disable a check
        "mrtd = []",
        'unsafe_allow_debug = "true"',  # no coercion
        "unsafe_allow_debug = 1",
        'mr_td = ["00"]',  # wrong hex length
        f'mr_td = ["{"0" * 95}"]',
        f'mr_td = ["{"zz" * 48}"]',
        f'mr_td = "{"00" * 48}"',  # must be a list
        f'xfam = ["{"00" * 48}"]',
        f'report_data = "{"00" * 48}"',
        "allowed_advisory_ids = [1]",
        "[mr_td]",
        "not toml at all =",
    ],
)
def test_malformed_policy_files(text: str) -> None:
    with pytest.raises(PolicyFormatError) as info:
        Policy.from_toml(text)
    assert info.value.check


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyFormatError, match=r"toml or .json"):
        load_policy(tmp_path / "policy.yaml")
    with pytest.raises(PolicyFormatError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad_json = tmp_path / "p.json"
    bad_json.write_text("[1, 2]")
    with pytest.raises(PolicyFormatError, match="table/object"):
        load_policy(bad_json)
    bad_json.write_text("{")
    with pytest.raises(PolicyFormatError, match="JSON"):
        load_policy(bad_json)
