"""What the developer portal page (`/apps/<id>`) shows of one attestation result, in its order:
the verdict first, then the failed check (for a refusal), then every check with the failed ones
at the top. No I/O; the template only lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from appliance.console.attestation import UNAVAILABLE_STAGES
from appliance.console.registry import RegisteredEnclave
from ratls.result import AttestationResult, Check, ErrorInfo

Verdict = Literal["VERIFIED", "REFUSED", "UNREACHABLE"]
_ORDER = {"failed": 0, "unsafe_allowed": 1, "passed": 2, "not_pinned": 3, "not_applicable": 4}


@dataclass(frozen=True)
class AppView:
    app_id: str
    url: str
    verdict: Verdict
    # Evidence from a simulated TEE, or judged against a simulated root: proves nothing.
    simulated: bool
    # The first error: the check that refused (or the evidence that could not be had).
    failure: ErrorInfo | None
    checks: tuple[Check, ...]
    result: AttestationResult
    challenge: str | None  # the tenant's nonce, hex, when one was given


def app_view(enclave: RegisteredEnclave, result: AttestationResult, *,
             challenge: bytes | None) -> AppView:
    failure = result.errors[0] if result.errors else None
    verdict: Verdict = "VERIFIED"
    if not result.verified:
        unavailable = failure is not None and failure.stage in UNAVAILABLE_STAGES
        verdict = "UNREACHABLE" if unavailable else "REFUSED"
    checks = sorted(result.checks, key=lambda check: _ORDER.get(check.outcome, len(_ORDER)))
    return AppView(
        app_id=enclave.enclave_id, url=enclave.url, verdict=verdict,
        simulated=result.tee == "simulated" or enclave.simulated,
        failure=failure, checks=tuple(checks), result=result,
        challenge=None if challenge is None else challenge.hex(),
    )
