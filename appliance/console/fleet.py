"""The fleet as JSON (`GET /api/v1/enclaves`): every registered appliance, from the stored state
and the refusal counts, at an injected time. No I/O.

`attestation.verdict`, per enclave, is about the certificate of its last accepted push:
- `verified`: verified under its policy, and still within the verdict's `valid_until`;
- `expired`: past its `valid_until`, and no push with a newer certificate was accepted since;
- `refused`: no push was ever accepted and the latest refusal was about the certificate
  (`attestation_refused`, `certificate_not_enclave`); `failed_check` names the check;
- `unknown`: nothing arrived yet.
A refused push never replaces what was accepted, so another appliance pushing under this id
cannot change the verdict; it shows in `refusals`, `last_refusal` and
`refused_since_last_accept` (a refusal arrived after the last accepted push: the status shown
may be out of date, e.g. after a load whose certificate the policy refuses).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from appliance.console.errors import ATTESTATION_REASONS
from appliance.console.registry import Registry
from appliance.console.store import UNATTRIBUTED, AcceptedStatus, RefusalTally


def fleet_document(registry: Registry, statuses: Mapping[str, AcceptedStatus],
                   refusals: Iterable[RefusalTally], *, now: datetime) -> dict[str, Any]:
    by_enclave: dict[str, list[RefusalTally]] = {}
    for tally in refusals:
        by_enclave.setdefault(tally.enclave_id, []).append(tally)
    return {
        "object": "list",
        "evaluated_at": now.isoformat(),
        "enclaves": [
            _enclave(enclave_id, enclave.url, enclave.simulated, statuses.get(enclave_id),
                     by_enclave.get(enclave_id, []), now)
            for enclave_id, enclave in registry.enclaves.items()
        ],
        # Pushes that named no registered enclave, or were refused before naming one.
        "unattributed_refusals": _counts(by_enclave.get(UNATTRIBUTED, [])),
        # The latest of them: its message shows what was claimed (untrusted text).
        "unattributed_last_refusal": _last_refusal(by_enclave.get(UNATTRIBUTED, [])),
    }


def _enclave(enclave_id: str, url: str, simulated: bool, status: AcceptedStatus | None,
             refusals: list[RefusalTally], now: datetime) -> dict[str, Any]:
    last_refusal = max(refusals, key=lambda t: t.last_at, default=None)
    return {
        "id": enclave_id,
        "url": url,
        "simulated": simulated,
        "status": None if status is None else _status(status),
        "attestation": _attestation(status, refusals, now),
        "last_push_at": None if status is None else status.received_at.isoformat(),
        "last_push_age_seconds": None if status is None
        else round((now - status.received_at).total_seconds(), 3),
        "pushes_accepted": 0 if status is None else status.pushes_accepted,
        "refusals": _counts(refusals),
        "last_refusal": _last_refusal(refusals),
        "refused_since_last_accept": last_refusal is not None and (
            status is None or last_refusal.last_at > status.received_at),
    }


def _status(status: AcceptedStatus) -> dict[str, Any]:
    payload = status.payload
    return {
        "model": payload.get("loaded_model"),
        "model_digest": payload.get("loaded_model_digest"),
        "lifecycle": payload.get("proxy_status"),
        "progress": payload.get("proxy_progress"),
        "message": payload.get("proxy_message"),
        "error": payload.get("error"),
        "pushed_at": status.pushed_at.isoformat(),
        "sequence": status.sequence,
        "payload": dict(payload),
    }


def _attestation(status: AcceptedStatus | None, refusals: list[RefusalTally],
                 now: datetime) -> dict[str, Any]:
    if status is None:
        refused = max((t for t in refusals if t.reason in ATTESTATION_REASONS),
                      key=lambda t: t.last_at, default=None)
        if refused is None:
            return {"verdict": "unknown", "failed_check": None}
        return {"verdict": "refused", "reason": refused.reason,
                "failed_check": refused.last_check, "message": refused.last_message,
                "at": refused.last_at.isoformat()}
    result = status.attestation
    valid_until = result.get("valid_until")
    expired = valid_until is None or datetime.fromisoformat(valid_until) <= now
    certificate = result.get("certificate") or {}
    return {
        "verdict": "expired" if expired else "verified",
        "failed_check": None,
        "tee": result.get("tee"),
        "tcb_status": result.get("tcb_status"),
        "advisory_ids": result.get("advisory_ids", []),
        "model_digest": result.get("model_digest"),
        "certificate_sha256": certificate.get("sha256_fingerprint"),
        "evaluated_at": result.get("evaluated_at"),
        "valid_until": valid_until,
        "checks": result.get("checks", []),
    }


def _counts(refusals: Iterable[RefusalTally]) -> dict[str, int]:
    return {tally.reason: tally.count for tally in refusals}


def _last_refusal(refusals: Iterable[RefusalTally]) -> dict[str, Any] | None:
    last = max(refusals, key=lambda t: t.last_at, default=None)
    return None if last is None else {
        "reason": last.reason, "check": last.last_check, "message": last.last_message,
        "at": last.last_at.isoformat(),
    }
