"""A pinned appraisal policy from one verified observation (trust on first use), as a file.

`appliance policy init` verifies an appliance (or a quote file) with nothing pinned, then writes
what it saw: MRTD, RTMR0-2, the TD attribute word and XFAM, optionally the digests of the served
models (as the allowlist), and an `[origin]` table saying that these values were trusted on first
use, when and from where. Every later connection is then held to them. The file is TOML that
`AppraisalPolicy.load` reads; to accept an image upgrade, append the new release's values to each
list.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from attest.verify import VerifiedQuote
from ratls.policy import (
    MAX_AGE_KEY,
    MAX_VALIDITY_KEY,
    MODEL_DIGESTS_KEY,
    ORIGIN_KEY,
    REQUIRED_MODEL_DIGESTS_KEY,
    UNSAFE_UNPINNED_KEY,
    AppraisalPolicy,
    PolicyOrigin,
)
from ratls.result import AttestationResult

TRUST_ON_FIRST_USE = "trust-on-first-use"


class UnverifiedObservation(ValueError):
    """A result that was not verified: nothing in it may be pinned."""


def policy_from_result(
    result: AttestationResult, *, source: str, pin_model_digest: bool
) -> AppraisalPolicy:
    """The policy that pins what a verified `result` showed. Raises UnverifiedObservation."""
    measurements = result.measurements
    if not result.verified or measurements is None:
        raise UnverifiedObservation("the observation was not verified: nothing to pin")
    # The served digests: `model_digest` for one model (results from before `models` existed
    # carry only it), `models` for several.
    served = (
        [m.digest for m in result.models]
        if len(result.models) > 1
        else [result.model_digest] if result.model_digest else []
    )
    if pin_model_digest and not served:
        raise UnverifiedObservation("the appliance has no model loaded: no model digest to pin")
    origin = PolicyOrigin(
        method=TRUST_ON_FIRST_USE,
        source=source,
        observed_at=result.evaluated_at.isoformat(),
        tee=result.tee,
        tcb_status=result.tcb_status,
        certificate_sha256=result.certificate.sha256_fingerprint if result.certificate else None,
    )
    return _pinning(
        {
            "mr_td": measurements.mr_td,
            **{f"rtmr{index}": measurements.rtmr[index] for index in range(3)},
            "td_attributes": measurements.td_attributes,
            "xfam": measurements.xfam,
        },
        origin,
        served if pin_model_digest else None,
    )


def policy_from_quote(
    verified: VerifiedQuote, *, source: str, observed_at: datetime
) -> AppraisalPolicy:
    """The policy that pins what a DCAP-verified quote shows (no certificate, so no model)."""
    body = verified.quote.body
    origin = PolicyOrigin(
        method=TRUST_ON_FIRST_USE,
        source=source,
        observed_at=observed_at.isoformat(),
        tee="simulated" if verified.simulated else "tdx",
        tcb_status=verified.tcb_status.value,
    )
    return _pinning(
        {
            "mr_td": body.mr_td.hex(),
            **{f"rtmr{index}": body.rtmr[index].hex() for index in range(3)},
            "td_attributes": body.td_attributes.hex(),
            "xfam": body.xfam.hex(),
        },
        origin,
        None,
    )


def _pinning(
    registers: dict[str, str], origin: PolicyOrigin, model_digests: list[str] | None
) -> AppraisalPolicy:
    document: dict[str, object] = {
        **{name: [value] for name, value in registers.items()},
        ORIGIN_KEY: origin.to_document(),
    }
    if model_digests is not None:
        document[MODEL_DIGESTS_KEY] = model_digests
    return AppraisalPolicy.from_document(document, source=origin.source)


def render_policy_toml(policy: AppraisalPolicy, *, written_at: datetime) -> str:
    """The policy as a commented TOML file that `AppraisalPolicy.load` reads back equal."""
    tdx = policy.tdx.model_dump(exclude_none=True, exclude_defaults=True)
    lines = [
        "# Appraisal policy for `appliance attest/chat --policy`.",
        f"# Written {written_at.isoformat()}.",
    ]
    if policy.origin is not None and policy.origin.method == TRUST_ON_FIRST_USE:
        lines += [
            "# TRUST ON FIRST USE: these values are what the source showed when it was first",
            "# verified, not reference values from the image build. Compare them with the",
            "# image's published reference values before relying on them.",
        ]
    lines.append("# A list may hold several values (an image upgrade overlaps two releases).")
    lines.append("")
    for key, value in tdx.items():
        lines.append(f"{key} = {_toml_value(value)}")
    if policy.allowed_model_digests is not None:
        digests = sorted(d.hex() for d in policy.allowed_model_digests)
        lines.append(f"{MODEL_DIGESTS_KEY} = {_toml_value(digests)}")
    if policy.required_model_digests is not None:
        required = sorted(d.hex() for d in policy.required_model_digests)
        lines.append(f"{REQUIRED_MODEL_DIGESTS_KEY} = {_toml_value(required)}")
    lines.append(f"{MAX_VALIDITY_KEY} = {_hours(policy.max_certificate_validity)}")
    lines.append(f"{MAX_AGE_KEY} = {_hours(policy.max_certificate_age)}")
    if policy.unsafe_allow_unpinned:
        lines.append(f"{UNSAFE_UNPINNED_KEY} = true")
    if policy.origin is not None:
        lines += ["", f"[{ORIGIN_KEY}]"]
        for key, value in policy.origin.to_document().items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    """A TOML value for the strings, numbers and lists of strings a policy holds."""
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_char(char: str) -> str:
    # TOML basic strings: escape the quote, the backslash and control characters (incl. DEL);
    # everything else, astral characters included, stands as itself.
    if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\u{ord(char):04x}"
    return char


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return str(int(hours)) if hours.is_integer() else str(hours)
