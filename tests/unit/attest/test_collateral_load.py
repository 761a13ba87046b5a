"""Collateral loading: the 14 bundles, raw PCS responses, and malformed bundles and documents."""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest
from attest_vectors import BUNDLE_NAMES, MANIFEST, VECTORS, bundle, bundle_path
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.collateral import BUNDLE_KEYS
from attest.collateral_load import (
    collateral_from_bundle_json,
    collateral_from_pcs_directory,
    collateral_from_pcs_responses,
)
from attest.errors import CollateralFormatError

TINFOIL = VECTORS / "tdx" / "collateral" / "tinfoil-verifier"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("meta", MANIFEST["collateral_bundles"], ids=BUNDLE_NAMES)
def test_bundle_loads_and_matches_manifest(meta: dict) -> None:
    collateral = bundle(meta["name"])
    identity = collateral.identity
    assert identity.fmspc == meta["fmspc"]
    assert identity.tcb_evaluation_data_number == meta["tcb_eval"]
    assert identity.qe_identity_evaluation_data_number == meta["qe_eval"]
    assert [iso(identity.tcb_info_issue_date), iso(identity.tcb_info_next_update)] == meta[
        "tcb_info"
    ]
    assert [iso(identity.qe_identity_issue_date), iso(identity.qe_identity_next_update)] == meta[
        "qe_identity"
    ]
    assert [iso(identity.pck_crl_this_update), iso(identity.pck_crl_next_update)] == meta["pck_crl"]
    assert [iso(identity.root_ca_crl_this_update), iso(identity.root_ca_crl_next_update)] == meta[
        "root_ca_crl"
    ]
    assert collateral.pck_crl.issuer_cn == meta["pck_crl_issuer"]
    assert identity.to_dict()["tcb_info_issue_date"] == meta["tcb_info"][0]


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_bundle_json_round_trips_field_for_field(name: str) -> None:
    original = json.loads(bundle_path(name).read_text())
    written = bundle(name).to_bundle_json()
    assert json.loads(written) == original  # signed texts, hex and even the PEM text are kept
    assert collateral_from_bundle_json(written) == bundle(name)


@pytest.mark.parametrize(
    ("day", "fmspc", "assembled"),
    [
        ("2025-12-17", "90c06f000000", "tinfoil_90c06f_2025-12"),
        ("2025-12-17", "00a06d080000", "tinfoil_00a06d_2025-12"),
        ("2026-01-12", "90c06f000000", "tinfoil_90c06f_2026-01"),
        ("2026-01-12", "00a06d080000", "tinfoil_00a06d_2026-01"),
    ],
)
def test_raw_pcs_responses_give_the_assembled_bundle(day: str, fmspc: str, assembled: str) -> None:
    loaded = collateral_from_pcs_directory(TINFOIL / day, fmspc=fmspc.upper(), pck_ca="platform")
    assert loaded == bundle(assembled)
    processor = collateral_from_pcs_directory(TINFOIL / day, fmspc=fmspc, pck_ca="processor")
    assert processor.pck_crl.issuer_cn == "Intel SGX PCK Processor CA"


def pcs_inputs(day: str = "2025-12-17", fmspc: str = "90c06f000000") -> dict:
    d = TINFOIL / day
    return {
        "tcb_info_body": (d / f"tcb_info_{fmspc}.json").read_bytes(),
        "tcb_info_issuer_chain": (d / f"tcb_info_{fmspc}_chain.txt").read_text(),
        "qe_identity_body": (d / "qe_identity.json").read_bytes(),
        "qe_identity_issuer_chain": (d / "qe_identity_chain.txt").read_text(),
        "pck_crl": (d / "pck_crl_platform.crl").read_bytes(),
        "pck_crl_issuer_chain": (d / "pck_crl_platform_chain.txt").read_text(),
        "root_ca_crl": (d / "root_ca.crl").read_bytes(),
    }


def test_signed_member_is_cut_verbatim_from_any_layout() -> None:
    inputs = pcs_inputs()
    body = json.loads(inputs["tcb_info_body"])
    signed_text = bundle("tinfoil_90c06f_2025-12").tcb_info.text
    # Signature first, spaces and newlines around members: the value text must still be exact.
    relaid = (
        '\n {  "signature" : "' + body["signature"] + '" ,\n\t"tcbInfo":' + signed_text + "\n}\n"
    )
    collateral = collateral_from_pcs_responses(**{**inputs, "tcb_info_body": relaid})
    assert collateral.tcb_info.text == signed_text
    assert collateral.tcb_info.signature.hex() == body["signature"]


def test_crl_encodings_and_plain_pem_chain() -> None:
    inputs = pcs_inputs()
    der = inputs["root_ca_crl"]
    pem = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    plain_chain = urllib.parse.unquote(inputs["qe_identity_issuer_chain"])
    for root_ca_crl in (der, der.hex().encode(), der.hex(), pem):
        loaded = collateral_from_pcs_responses(
            **{**inputs, "root_ca_crl": root_ca_crl, "qe_identity_issuer_chain": plain_chain}
        )
        assert loaded == bundle("tinfoil_90c06f_2025-12")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tcb_info_body", b'{"tcbInfo":{}}'),
        ("tcb_info_body", b'{"tcbInfo":{},"signature":"00","extra":1}'),
        ("tcb_info_body", b'{"tcbInfo":{},"signature":"00"} trailing'),
        ("tcb_info_body", b'{"tcbInfo":{},"tcbInfo":{},"signature":"00"}'),
        ("tcb_info_body", b'{"tcbInfo":{},"signature":"00",}'),
        ("tcb_info_body", b'["tcbInfo"]'),
        ("tcb_info_body", b'{"tcbInfo":{,"signature":"00"}'),
        ("tcb_info_body", b"\xff"),
        ("qe_identity_body", b'{"enclaveIdentity":{},"signature":5}'),
        ("pck_crl", b"not a crl"),
        ("root_ca_crl", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
        ("pck_crl_issuer_chain", "-----BEGIN%20CERTIFICATE-----%0Azzz"),
        ("tcb_info_issuer_chain", ""),
    ],
)
def test_malformed_pcs_responses(field: str, value: bytes | str) -> None:
    with pytest.raises(CollateralFormatError):
        collateral_from_pcs_responses(**{**pcs_inputs(), field: value})


def test_missing_file_in_pcs_directory(tmp_path: Path) -> None:
    with pytest.raises(CollateralFormatError, match="cannot read"):
        collateral_from_pcs_directory(tmp_path, fmspc="90c06f000000", pck_ca="platform")
    with pytest.raises(CollateralFormatError, match="unknown PCK CA"):
        collateral_from_pcs_directory(TINFOIL / "2025-12-17", fmspc="90c06f000000", pck_ca="x")


# --- malformed bundles and documents ------------------------------------------------------------


def base_bundle() -> dict:
    return json.loads(bundle_path("dcapqvl_b0c06f_2025-06").read_text())


def with_document(key: str, edit) -> str:
    """The base bundle with its signed `key` document (tcb_info, qe_identity) edited."""
    data = base_bundle()
    doc = json.loads(data[key])
    edit(doc)
    data[key] = json.dumps(doc)
    return json.dumps(data)


def with_tcb_info(edit) -> str:
    return with_document("tcb_info", edit)


def with_qe_identity(edit) -> str:
    return with_document("qe_identity", edit)


def set_key(key: str, value):
    return lambda doc: doc.__setitem__(key, value)


def first_level(edit):
    return lambda doc: edit(doc["tcbLevels"][0])


MALFORMED_BUNDLES = {
    "not json": "{",
    "not an object": "[]",
    "unknown key": json.dumps({**base_bundle(), "pck_certificate_chain": ""}),
    "missing key": json.dumps({k: v for k, v in base_bundle().items() if k != "pck_crl"}),
    "number instead of string": json.dumps({**base_bundle(), "tcb_info_signature": 5}),
    "short signature": json.dumps({**base_bundle(), "tcb_info_signature": "00" * 63}),
    "odd hex": json.dumps({**base_bundle(), "pck_crl": base_bundle()["pck_crl"][:-1]}),
    "non-hex crl": json.dumps({**base_bundle(), "root_ca_crl": "zz"}),
    "crl garbage": json.dumps({**base_bundle(), "root_ca_crl": "3000"}),
    "empty chain": json.dumps({**base_bundle(), "tcb_info_issuer_chain": ""}),
    "duplicate key": json.dumps(base_bundle()).replace(
        '{"pck_crl_issuer_chain"', '{"pck_crl": "", "pck_crl_issuer_chain"', 1
    ),
    "tcb info not json": json.dumps({**base_bundle(), "tcb_info": "{"}),
    "duplicate key in signed text": json.dumps(
        {
            **base_bundle(),
            "tcb_info": base_bundle()["tcb_info"].replace(
                '{"id":"TDX"', '{"id":"SGX","id":"TDX"', 1
            ),
        }
    ),
    "unknown status": with_tcb_info(first_level(set_key("tcbStatus", "Fine"))),
    "status in the wrong case": with_tcb_info(first_level(set_key("tcbStatus", "revoked"))),
    "date without Z": with_tcb_info(set_key("issueDate", "2025-06-19T10:16:03")),
    "date only": with_tcb_info(set_key("nextUpdate", "2025-06-19")),
    "impossible date": with_tcb_info(set_key("nextUpdate", "2025-02-30T00:00:00Z")),
    "boolean version": with_tcb_info(set_key("version", True)),
    "string evaluation number": with_tcb_info(set_key("tcbEvaluationDataNumber", "17")),
    "short fmspc": with_tcb_info(set_key("fmspc", "B0C06F00")),
    "no levels": with_tcb_info(set_key("tcbLevels", [])),
    "15 components": with_tcb_info(first_level(lambda lv: lv["tcb"]["sgxtcbcomponents"].pop())),
    "svn too large": with_tcb_info(
        first_level(lambda lv: lv["tcb"]["sgxtcbcomponents"][0].__setitem__("svn", 256))
    ),
    "negative pcesvn": with_tcb_info(first_level(lambda lv: lv["tcb"].__setitem__("pcesvn", -1))),
    "tdx components missing": with_tcb_info(
        first_level(lambda lv: lv["tcb"].pop("tdxtcbcomponents"))
    ),
    "advisory not a string": with_tcb_info(first_level(set_key("advisoryIDs", [1]))),
    "module mrsigner short": with_tcb_info(lambda d: d["tdxModule"].__setitem__("mrsigner", "00")),
    "module level status": with_tcb_info(
        lambda d: d["tdxModuleIdentities"][0]["tcbLevels"][0].__setitem__(
            "tcbStatus", "SWHardeningNeeded"
        )
    ),
    "qe missing mrsigner": with_qe_identity(lambda d: d.pop("mrsigner")),
    "qe no levels": with_qe_identity(set_key("tcbLevels", [])),
    "qe level not an object": with_qe_identity(set_key("tcbLevels", [4])),
    "qe isvprodid string": with_qe_identity(set_key("isvprodid", "2")),
}


@pytest.mark.parametrize("label", sorted(MALFORMED_BUNDLES))
def test_malformed_bundle_is_a_collateral_format_error(label: str) -> None:
    with pytest.raises(CollateralFormatError) as info:
        collateral_from_bundle_json(MALFORMED_BUNDLES[label])
    assert info.value.check, "errors name the field"


def test_bundle_keys_are_dcap_qvl_order() -> None:
    assert list(base_bundle()) == list(BUNDLE_KEYS)
