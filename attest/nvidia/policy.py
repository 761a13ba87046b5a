"""The validate stage for GPU evidence: a `GpuPolicy` over a `VerifiedGpuEvidence`.

Fail-closed rules, as in `attest.policy` for TDX:
- CC mode must be "on". DevTools mode (CC with debugging and profiling, so not confidential)
  is refused unless `unsafe_allow_devtools`; "off" and "not reported" always are.
- Revocation must have been checked (`require_ocsp`, default true) and the measurements must
  equal NVIDIA's reference values (`require_rim_match`, default true). Turning either off lets
  unchecked evidence through, recorded as `unsafe_allowed`; a reference mismatch is refused
  whatever the policy says.
- Driver and VBIOS versions: an allowlist and/or a minimum each; absent means "not pinned".
- `measurements` pins values per index (an index absent from the report fails); absent means
  "not pinned", an empty list for an index pins it to nothing.
- Unknown fields in a policy are errors: a typo must never silently disable a check.

`validate_gpu(verified, policy)` runs every check, records each (name, expected, actual,
outcome: the shapes of `attest.policy`), and raises `GpuPolicyError` naming the first failed
check (with all of them in `.checks`) or returns a `PolicyOutcome` with the list.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from attest.errors import GpuPolicyError, GpuPolicyFormatError
from attest.nvidia.collateral import CheckState, GpuCcMode
from attest.nvidia.report import MAX_BLOCK_INDEX, MIN_BLOCK_INDEX
from attest.nvidia.verify import VerifiedGpuEvidence
from attest.policy import (
    CheckOutcome,
    Measurement,
    PolicyCheck,
    PolicyOutcome,
    conclude,
    validate_mapping,
)

_DRIVER_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){1,3}")
_VBIOS_VERSION = re.compile(r"[0-9a-f]{2}(\.[0-9a-f]{2}){4}")


def _driver_version(value: str) -> str:
    if not _DRIVER_VERSION.fullmatch(value):
        raise ValueError(f"not a driver version like 550.90.07: {value!r}")
    return value


def _vbios_version(value: str) -> str:
    value = value.lower()
    if not _VBIOS_VERSION.fullmatch(value):
        raise ValueError(f"not a VBIOS version like 96.00.9f.00.01: {value!r}")
    return value


DriverVersion = Annotated[str, AfterValidator(_driver_version)]
VbiosVersion = Annotated[str, AfterValidator(_vbios_version)]
MeasurementIndex = Annotated[int, Field(ge=MIN_BLOCK_INDEX, le=MAX_BLOCK_INDEX)]


def driver_version_key(version: str) -> tuple[int, ...]:
    """550.90.07 -> (550, 90, 7): decimal components, compared in order."""
    return tuple(int(part) for part in version.split("."))


def vbios_version_key(version: str) -> tuple[int, ...]:
    """96.00.9f.00.01 -> (0x96, 0, 0x9f, 0, 1): hexadecimal components, compared in order."""
    return tuple(int(part, 16) for part in version.split("."))


class GpuPolicy(BaseModel):
    """What verified GPU evidence must show to be accepted. Defaults are the strict ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unsafe_allow_devtools: StrictBool = False
    require_ocsp: StrictBool = True
    require_rim_match: StrictBool = True

    allowed_driver_versions: tuple[DriverVersion, ...] | None = None
    min_driver_version: DriverVersion | None = None
    allowed_vbios_versions: tuple[VbiosVersion, ...] | None = None
    min_vbios_version: VbiosVersion | None = None
    measurements: dict[MeasurementIndex, tuple[Measurement, ...]] | None = None

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "gpu policy") -> GpuPolicy:
        """Validate a mapping (parsed TOML or JSON); errors name the field."""
        return validate_mapping(cls, data, source=source, error=GpuPolicyFormatError)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "gpu policy") -> GpuPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GpuPolicyFormatError(f"{source}: not valid TOML: {exc}", check=source) from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "gpu policy") -> GpuPolicy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GpuPolicyFormatError(f"{source}: not valid JSON: {exc}", check=source) from None
        return cls.from_mapping(data, source=source)


def validate_gpu(verified: VerifiedGpuEvidence, policy: GpuPolicy) -> PolicyOutcome:
    """Apply `policy` to verified GPU evidence. Raises `GpuPolicyError` (with `.checks`)."""
    checks: list[PolicyCheck] = []

    def record(name: str, ok: bool, expected: str, actual: str, relaxed: bool = False) -> None:
        outcome = (
            CheckOutcome.PASSED
            if ok
            else (CheckOutcome.UNSAFE_ALLOWED if relaxed else CheckOutcome.FAILED)
        )
        checks.append(PolicyCheck(name, expected, actual, outcome))

    # 1. CC mode.
    mode = verified.cc_mode
    record(
        "cc_mode",
        mode is GpuCcMode.ON,
        GpuCcMode.ON.value,
        mode.value,
        relaxed=mode is GpuCcMode.DEVTOOLS and policy.unsafe_allow_devtools,
    )

    # 2. Revocation.
    revocation = verified.revocation.state
    record(
        "revocation",
        revocation is CheckState.CHECKED,
        "OCSP: every device CA good",
        revocation.value,
        relaxed=not policy.require_ocsp,
    )

    # 3. NVIDIA's reference measurements (a mismatch is never relaxed).
    comparison = verified.reference_measurements
    record(
        "reference_measurements",
        comparison.state is CheckState.MATCHED,
        f"{CheckState.MATCHED.value} ({comparison.source or 'no RIM given'})",
        comparison.state.value
        + (f" at {list(comparison.mismatched)}" if comparison.mismatched else ""),
        relaxed=comparison.state is CheckState.NOT_CHECKED and not policy.require_rim_match,
    )

    # 4. Measurements pinned per index.
    actual_measurements = verified.measurements
    if policy.measurements is None:
        checks.append(
            PolicyCheck(
                "measurements",
                "not pinned",
                f"{len(actual_measurements)} indices",
                CheckOutcome.NOT_PINNED,
            )
        )
    else:
        for index, pinned in sorted(policy.measurements.items()):
            value = actual_measurements.get(index)
            record(
                f"measurement[{index}]",
                value in pinned,
                _one_of([v.hex() for v in pinned]),
                value.hex() if value is not None else "absent",
            )

    # 5. Driver and VBIOS versions.
    for name, actual, allowed, minimum, pattern, key in (
        (
            "driver_version",
            verified.driver_version,
            policy.allowed_driver_versions,
            policy.min_driver_version,
            _DRIVER_VERSION,
            driver_version_key,
        ),
        (
            "vbios_version",
            verified.vbios_version,
            policy.allowed_vbios_versions,
            policy.min_vbios_version,
            _VBIOS_VERSION,
            vbios_version_key,
        ),
    ):
        if allowed is None:
            checks.append(PolicyCheck(name, "not pinned", actual, CheckOutcome.NOT_PINNED))
        else:
            record(name, actual.lower() in allowed, _one_of(list(allowed)), actual)
        if minimum is None:
            checks.append(
                PolicyCheck(f"{name}.minimum", "not pinned", actual, CheckOutcome.NOT_PINNED)
            )
        else:
            # A version in another format (the report's text is the driver's) is not comparable.
            comparable = pattern.fullmatch(actual.lower()) is not None
            at_least = comparable and key(actual.lower()) >= key(minimum)
            record(f"{name}.minimum", at_least, f">= {minimum}", actual)

    return conclude(checks, GpuPolicyError, "the GPU evidence")


def _one_of(values: list[str]) -> str:
    return "one of [" + ", ".join(values) + "]" if values else "nothing (empty allowlist)"
