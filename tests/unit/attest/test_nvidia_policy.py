"""The GPU policy on the real Hopper report: strict defaults, allowlists and minimums, pinned
measurements, and policy files that name only known fields."""

from __future__ import annotations

import dataclasses

import pytest
from nvidia_vectors import HOPPER, NOW, nvidia_root

from attest.errors import GpuPolicyError, GpuPolicyFormatError
from attest.nvidia.collateral import GpuCcMode
from attest.nvidia.opaque import OpaqueData, OpaqueField, OpaqueFieldType
from attest.nvidia.policy import (
    GpuPolicy,
    driver_version_key,
    validate_gpu,
    vbios_version_key,
)
from attest.nvidia.verify import GpuVerifier, VerifiedGpuEvidence
from attest.policy import CheckOutcome

VERIFIED: VerifiedGpuEvidence = GpuVerifier(nvidia_root()).verify(
    HOPPER.raw, HOPPER.chain, nonce=HOPPER.nonce, now=NOW, cc_mode=GpuCcMode.ON
)
# The vectors come without OCSP responses or RIMs: these tests relax those two checks.
NO_COLLATERAL = {"require_ocsp": False, "require_rim_match": False}
BLOCK_12 = VERIFIED.measurements[12].hex()


def outcome_of(**fields):
    return validate_gpu(VERIFIED, GpuPolicy(**NO_COLLATERAL, **fields))


def refusal(**fields) -> GpuPolicyError:
    with pytest.raises(GpuPolicyError) as caught:
        outcome_of(**fields)
    return caught.value


def test_default_policy_refuses_evidence_without_collateral() -> None:
    with pytest.raises(GpuPolicyError) as caught:
        validate_gpu(VERIFIED, GpuPolicy())
    error = caught.value
    assert error.check == "revocation"
    failed = [c.name for c in error.checks if c.outcome is CheckOutcome.FAILED]
    assert failed == ["revocation", "reference_measurements"]


def test_relaxed_collateral_is_recorded_as_unsafe() -> None:
    outcome = outcome_of()
    assert outcome.unsafe_allowed == ("revocation", "reference_measurements")
    assert set(outcome.not_pinned) == {
        "measurements",
        "driver_version",
        "driver_version.minimum",
        "vbios_version",
        "vbios_version.minimum",
    }


def test_versions_allowlisted_and_minimum() -> None:
    outcome = outcome_of(
        allowed_driver_versions=["550.90.07", "535.86.10"],
        min_driver_version="550.54.14",
        allowed_vbios_versions=["96.00.9F.00.01"],  # case does not matter in hex
        min_vbios_version="96.00.5e.00.01",
    )
    passed = {c.name for c in outcome.checks if c.outcome is CheckOutcome.PASSED}
    assert {
        "driver_version",
        "driver_version.minimum",
        "vbios_version",
        "vbios_version.minimum",
    } <= passed


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"allowed_driver_versions": ["535.86.10"]}, "driver_version"),
        ({"allowed_driver_versions": []}, "driver_version"),
        ({"min_driver_version": "550.90.8"}, "driver_version.minimum"),
        ({"min_driver_version": "560.28.03"}, "driver_version.minimum"),
        ({"allowed_vbios_versions": ["96.00.74.00.1a"]}, "vbios_version"),
        ({"min_vbios_version": "96.00.a0.00.01"}, "vbios_version.minimum"),
    ],
)
def test_versions_refused(fields: dict, check: str) -> None:
    assert refusal(**fields).check == check


def test_version_keys_compare_numerically() -> None:
    assert driver_version_key("550.90.07") > driver_version_key("550.9.70")
    assert vbios_version_key("96.00.9f.00.01") < vbios_version_key("96.00.a0.00.00")


def test_measurements_pinned_per_index() -> None:
    outcome = outcome_of(measurements={"12": [bytes(48).hex(), BLOCK_12]})
    assert any(
        c.name == "measurement[12]" and c.outcome is CheckOutcome.PASSED for c in outcome.checks
    )
    error = refusal(measurements={12: [bytes(48).hex()]})
    assert (error.check, error.actual) == ("measurement[12]", BLOCK_12)
    assert refusal(measurements={12: []}).check == "measurement[12]"
    absent = refusal(measurements={200: [BLOCK_12]})
    assert (absent.check, absent.actual) == ("measurement[200]", "absent")


def test_policy_from_toml_and_json() -> None:
    toml = f"""
        unsafe_allow_devtools = false
        min_driver_version = "550.54.14"
        allowed_vbios_versions = ["96.00.9f.00.01"]
        [measurements]
        "12" = ["{BLOCK_12}"]
    """
    policy = GpuPolicy.from_toml(toml)
    assert policy.measurements is not None and 12 in policy.measurements
    assert policy.require_ocsp and policy.require_rim_match
    assert GpuPolicy.from_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("unsafe_allow_devtool = true", "unsafe_allow_devtool"),  # a typo
        ('min_driver_version = "latest"', "min_driver_version"),
        ('allowed_vbios_versions = ["96.0.9f.0.1"]', "allowed_vbios_versions.0"),
        ('unsafe_allow_devtools = "yes"', "unsafe_allow_devtools"),
        ('[measurements]\n"0" = []', "measurements.0.[key]"),
        ('[measurements]\n"12" = ["abcd"]', "measurements.12.0"),
    ],
)
def test_policy_file_errors_name_the_field(text: str, check: str) -> None:
    with pytest.raises(GpuPolicyFormatError) as caught:
        GpuPolicy.from_toml(text)
    assert caught.value.check == check


def test_policy_text_errors() -> None:
    with pytest.raises(GpuPolicyFormatError):
        GpuPolicy.from_toml("= nope")
    with pytest.raises(GpuPolicyFormatError):
        GpuPolicy.from_json("[]")


def test_minimum_refuses_a_version_it_cannot_compare() -> None:
    # The driver version is the driver's text: one not in dotted-decimal form is not "at least".
    fields = tuple(
        OpaqueField(item.type, b"550.90.07-custom\x00")
        if item.type is OpaqueFieldType.DRIVER_VERSION
        else item
        for item in VERIFIED.report.opaque.fields
    )
    response = dataclasses.replace(VERIFIED.report.response, opaque=OpaqueData(fields))
    odd = dataclasses.replace(
        VERIFIED, report=dataclasses.replace(VERIFIED.report, response=response)
    )
    assert odd.driver_version == "550.90.07-custom"
    with pytest.raises(GpuPolicyError) as caught:
        validate_gpu(odd, GpuPolicy(**NO_COLLATERAL, min_driver_version="1.0"))
    assert caught.value.check == "driver_version.minimum"
