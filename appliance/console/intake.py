"""Receiving one status push: the checks in order, then the store (docs/design.md §9).

The first check that fails decides the refusal (HTTP status, reason):
1. the management token, compared in constant time (the route, `appliance/console/app.py`)
                                                                  401 invalid_token
2. the body: at most `max_body_bytes`, a JSON object              413 body_too_large,
                                                                  400 malformed_push
3. the enclave id it claims is registered                         403 unknown_enclave
4. a signed status document with its certificate                  422 unsigned_push,
                                                                  400 malformed_push
5. the signature, by the certificate's key, for the push purpose  403 bad_signature
6. the payload's time: at most `max_age` old, at most
   `max_skew` ahead of the console's clock                        422 stale_push,
                                                                  422 push_from_future
7. the certificate: verified under the enclave's policy, names
   including the registered host; 8. its key presented at the
   registered URL (`appliance/console/attestation.py`)            403 attestation_refused,
                                                                  403 certificate_not_enclave,
                                                                  503 evidence_unavailable,
                                                                  503 appliance_unreachable
9. later than the enclave's last accepted push, checked and
   stored in one transaction                                      409 replayed_push
Cheap checks come first, so a push refused for its signature or its age costs no DCAP run.
A refused push changes no stored status; it is counted (`ConsoleStore.count_refusal`) against the
enclave it claims from step 4 on, when that enclave is registered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.console.attestation import CertificateAttestor
from appliance.console.errors import (
    FuturePush,
    MalformedPush,
    Refused,
    StalePush,
    UnknownEnclave,
)
from appliance.console.push import (
    claimed_enclave_id,
    parse_document,
    signed_push,
    verify_signature,
)
from appliance.console.registry import Registry
from appliance.console.store import AcceptedStatus, ConsoleStore

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = timedelta(minutes=5)
DEFAULT_MAX_SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class Freshness:
    max_age: timedelta = DEFAULT_MAX_AGE
    max_skew: timedelta = DEFAULT_MAX_SKEW


class PushIntake:
    def __init__(self, *, registry: Registry, attestor: CertificateAttestor,
                 store: ConsoleStore, freshness: Freshness = Freshness()) -> None:
        self._registry = registry
        self._attestor = attestor
        self._store = store
        self._freshness = freshness

    def receive(self, body: bytes, *, now: datetime) -> AcceptedStatus:
        """Steps 2-9 (the body's size is bounded by the caller). Raises a Refused subclass;
        `enclave_id` is set on it once the push names a registered enclave."""
        # 2. A JSON object.
        document = parse_document(body)
        # 3. The enclave it claims is registered.
        claimed = claimed_enclave_id(document)
        if claimed is None:
            # Claims none: refused for what else is wrong with it, counted against no enclave.
            signed_push(document)
            raise MalformedPush("the push names no enclave", check="enclave_id",
                                param="payload.enclave_id")
        enclave = self._registry.get(claimed)
        if enclave is None:
            raise UnknownEnclave("no registered enclave has this id", check="enclave_id",
                                 param="payload.enclave_id", actual=repr(claimed[:64]))
        try:
            # 4. A signed status document, with its certificate.
            push = signed_push(document)
            # 5. The signature.
            verify_signature(push)
            # 6. The time.
            if push.time < now - self._freshness.max_age:
                raise StalePush("the push is too old", check="time", param="payload.time",
                                expected=f"after {(now - self._freshness.max_age).isoformat()}",
                                actual=push.time.isoformat())
            if push.time > now + self._freshness.max_skew:
                raise FuturePush("the push is dated ahead of the console's clock", check="time",
                                 param="payload.time",
                                 expected=f"before {(now + self._freshness.max_skew).isoformat()}",
                                 actual=push.time.isoformat())
            # 7-8. The certificate is the enclave's, verified.
            result = self._attestor.check(enclave, push.certificate, now=now)
            # 9. Later than the last accepted push, and stored.
            sequence = push.payload.get("sequence")
            accepted = self._store.accept(AcceptedStatus(
                enclave_id=enclave.enclave_id, pushed_at=push.time, received_at=now,
                sequence=sequence if isinstance(sequence, int) else None,
                certificate_sha256=result.certificate.sha256_fingerprint
                if result.certificate else "",
                payload=dict(push.payload), attestation=result.model_dump(mode="json"),
            ))
        except Refused as refusal:
            refusal.enclave_id = enclave.enclave_id
            raise
        log.info("push accepted from %s (%s, certificate %s)", enclave.enclave_id,
                 push.payload.get("proxy_status"), accepted.certificate_sha256[:16])
        return accepted
