"""Attesting an app on demand: the one procedure behind `appliance portal` and the console's
`GET /api/v1/apps/<id>/attest` and `/apps/<id>`.

1. The tenant's challenge, when given, is parsed as a nonce (16-64 bytes in hex); anything else
   is a 400 envelope before a connection is opened.
2. One RA-TLS handshake with the app's URL (`ratls.connection.probe`); in nonce mode the
   appliance is asked for a fresh quote binding its key and the nonce (the challenge, or a random
   one), so the verdict is about the TD answering now, not a cached certificate.
3. The result, verified or not: bad or unavailable evidence is a result, not an error.
"""

from __future__ import annotations

import logging

from appliance.errors import InvalidChallenge
from ratls.clock import Clock
from ratls.connection import probe
from ratls.errors import NonceError
from ratls.evidence import parse_nonce_hex
from ratls.result import AttestationResult
from ratls.verifier import RatlsVerifier

log = logging.getLogger(__name__)


def parse_challenge(text: str | None) -> bytes | None:
    """`?challenge=HEX` -> the nonce, None when absent; raises InvalidChallenge."""
    if text is None:
        return None
    try:
        return parse_nonce_hex(text)
    except NonceError as exc:
        raise InvalidChallenge(f"challenge: {exc}", param="challenge") from None


def attest_app(app_id: str, url: str, verifier: RatlsVerifier, *, clock: Clock,
               challenge: bytes | None, require_nonce: bool) -> AttestationResult:
    result = probe(url, verifier, clock=clock, require_nonce=require_nonce, nonce=challenge)
    log.info("attested app %s at %s%s: %s", app_id, url,
             " with the tenant's challenge" if challenge is not None else "",
             "verified" if result.verified else "refused")
    return result
