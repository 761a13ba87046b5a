"""Receipts for proxied exchanges: built from an `ExchangeRecord`, signed with the attested key
(ratls receipt v1), chained and stored in the receipt log.

Signing happens in the worker that served the exchange: it holds the TLS key anyway, and it saves
a round trip to the supervisor per request. The chain's order is the receipt log's commit order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ratls.issuer import IdentitySource
from ratls.receipts import ReceiptBody, Usage, format_time, sign_receipt

from appliance.metrics import Metrics
from appliance.proxy import ExchangeRecord
from appliance.receipt_log import ReceiptLog, SealedReceipt

log = logging.getLogger(__name__)

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class ReceiptRecorder:
    def __init__(self, log_: ReceiptLog, identity: IdentitySource, clock: Callable[[], datetime],
                 metrics: Metrics) -> None:
        self._log = log_
        self._identity = identity
        self._clock = clock
        self._metrics = metrics

    def record(self, exchange: ExchangeRecord) -> None:
        identity = self._identity.current()
        certificate = identity.certificate

        def seal(previous: str | None) -> SealedReceipt:
            body = ReceiptBody(
                id=exchange.receipt_id,
                time=format_time(self._clock()),
                model=exchange.model,
                # The digest the signing certificate carries, which is what a verifier checks.
                model_digest=identity.model_digest.hex() if identity.model_digest else None,
                request_sha256=exchange.request_sha256,
                response_sha256=exchange.response_sha256,
                usage=usage_of(exchange.usage),
                certificate_sha256=certificate.fingerprint.hex(),
                previous_receipt_sha256=previous,
            )
            receipt = sign_receipt(body, private_key=identity.private_key,
                                   certificate=certificate.certificate)
            return SealedReceipt(hash=receipt.receipt_sha256, document=receipt.model_dump_json().encode())

        self._log.append(exchange.receipt_id, seal)
        self._metrics.receipts.inc()
        if not exchange.complete:
            log.info("receipt %s covers an incomplete %s stream (%d)", exchange.receipt_id,
                     exchange.route, exchange.status)


def usage_of(reported: dict[str, Any] | None) -> Usage | None:
    """The engine's usage reduced to the receipt's fields; None when absent or not integers."""
    if not reported:
        return None
    fields = {name: reported.get(name) for name in _USAGE_FIELDS if reported.get(name) is not None}
    if not all(type(value) is int and value >= 0 for value in fields.values()):
        return None
    if "prompt_tokens" not in fields or "total_tokens" not in fields:
        return None
    return Usage(**fields)
