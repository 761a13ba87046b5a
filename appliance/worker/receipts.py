"""Receipts for proxied exchanges: built from an `ExchangeRecord`, signed with the attested key
(ratls receipt v1: canonical JSON, ECDSA P-256), chained and stored in the receipt log.

Signing happens in the worker that served the exchange: it holds the TLS key anyway, and it saves
a round trip to the supervisor per request. The chain's order is the receipt log's commit order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from appliance.metrics import Metrics
from appliance.worker.proxy import ExchangeRecord
from appliance.worker.receipt_log import ReceiptLog, SealedReceipt
from ratls.issuer import Identity
from ratls.receipts import RECEIPT_TYPE, format_time
from ratls.signing import sign_bytes

log = logging.getLogger(__name__)

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class ReceiptRecorder:
    def __init__(self, log_: ReceiptLog, clock: Callable[[], datetime], metrics: Metrics) -> None:
        self._log = log_
        self._clock = clock
        self._metrics = metrics

    def record(self, exchange: ExchangeRecord, identity: Identity) -> None:
        """Signs with `identity`: the one the client's connection presented, so that the receipt
        names the certificate the client verified."""
        fingerprint = identity.fingerprint.hex()
        digest = identity.model_digest.hex() if identity.model_digest else None
        usage = usage_of(exchange.usage)

        def seal(previous: str | None) -> SealedReceipt:
            # The ratls receipt v1 body, built directly: this runs for every response, and the
            # schema's pydantic round trips cost more than the signature. Tests check every
            # receipt against ratls' strict parser and `verify_receipt`.
            body = {
                "type": RECEIPT_TYPE,
                "id": exchange.receipt_id,
                "time": format_time(self._clock()),
                "model": exchange.model,
                # The digest the signing certificate carries, which is what a verifier checks.
                "model_digest": digest,
                "request_sha256": exchange.request_sha256,
                "response_sha256": exchange.response_sha256,
                "usage": usage,
                "status": exchange.status,
                "outcome": exchange.outcome,
                "certificate_sha256": fingerprint,
                "previous_receipt_sha256": previous,
            }
            message = canonical_bytes(body)
            receipt_sha256 = hashlib.sha256(message).hexdigest()
            body["receipt_sha256"] = receipt_sha256
            body["signature"] = sign_bytes(identity.private_key, message).hex()
            return SealedReceipt(hash=receipt_sha256, document=json.dumps(body).encode())

        self._log.append(exchange.receipt_id, seal)
        self._metrics.receipts.inc()
        if exchange.outcome != "complete":
            log.info("receipt %s covers an incomplete %s stream (%d, %s)", exchange.receipt_id,
                     exchange.route, exchange.status, exchange.outcome)


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a receipt body, by the C json encoder.

    For values that are only strings, integers, null and objects with ASCII keys (a receipt body:
    no floats), sorted compact `json.dumps` output is exactly RFC 8785 (its string escaping is
    JCS's; tests compare it with `ratls.signing.canonical_json`). Several times faster than the
    general canonicaliser, on a path every response takes.
    """
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def usage_of(reported: dict[str, Any] | None) -> dict[str, int] | None:
    """The engine's usage reduced to the receipt's fields; None when absent or not integers."""
    if not reported:
        return None
    fields = {name: reported[name] for name in _USAGE_FIELDS if reported.get(name) is not None}
    if not all(type(value) is int and value >= 0 for value in fields.values()):
        return None
    if "prompt_tokens" not in fields or "total_tokens" not in fields:
        return None
    return fields
