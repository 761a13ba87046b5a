"""The collateral documents' models: TCB info and QE identity as parsed from the signed text."""

from __future__ import annotations

import json

from attest_vectors import BUNDLE_NAMES, bundle

from attest.collateral_documents import TcbStatus, parse_qe_identity, parse_tcb_info


def test_parsed_model() -> None:
    tcb = bundle("tinfoil_90c06f_2025-12").tcb_info.tcb_info
    assert tcb.id == "TDX" and tcb.version == 3
    assert tcb.fmspc == bytes.fromhex("90c06f000000") and tcb.pce_id == b"\0\0"
    assert [m.id for m in tcb.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert tcb.tdx_module.mr_signer == bytes(48)
    top = tcb.tcb_levels[0]
    assert top.tcb_status is TcbStatus.UP_TO_DATE
    assert top.sgx_tcb_components[:8] == (3, 3, 2, 2, 4, 1, 0, 5)
    assert top.pce_svn == 13 and top.tdx_tcb_components[:3] == (5, 0, 3)
    assert tcb.tcb_levels[1].advisory_ids[0] == "INTEL-SA-01036"
    qe = bundle("tinfoil_90c06f_2025-12").qe_identity.qe_identity
    assert (qe.id, qe.version, qe.isv_prod_id, qe.miscselect_mask) == ("TD_QE", 2, 2, 0xFFFFFFFF)
    assert qe.mr_signer.hex().startswith("dc9e2a7c")
    assert bundle("gotdxguest_50806f_2023-06").tcb_info.tcb_info.tdx_module_identities is None
    assert bundle("dcapqvl_b0c06f_2024-09_processorCRL").qe_identity.qe_identity.id == "QE"


def test_models_are_parsed_from_the_signed_text_alone() -> None:
    for name in BUNDLE_NAMES:
        collateral = bundle(name)
        assert parse_tcb_info(json.loads(collateral.tcb_info.text)) == collateral.tcb_info.tcb_info
        assert (
            parse_qe_identity(json.loads(collateral.qe_identity.text))
            == collateral.qe_identity.qe_identity
        )
