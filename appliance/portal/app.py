"""The developer portal's attestation endpoint: `GET /api/v1/apps/<id>/attest[?challenge=HEX]`.

A browser cannot see a TLS certificate's extensions, so the portal performs the RA-TLS handshake
server-side to the app's configured URL, verifies the evidence with the ratls verifier (DCAP,
policy, key binding, model digest), and returns the structured AttestationResult. Bad evidence is
a *result* (200, `verified: false`, with the failed checks and errors); an unknown app id is a 404
envelope, a challenge that is not 16-64 bytes in hex a 400 envelope. Nothing but the handshake
(and, with nonce mode, the attestation request) is sent. The same procedure
(`appliance/portal/attestation.py`) serves the fleet console's portal for its registered apps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from appliance.errors import ApiError, MethodNotAllowed, NotFound
from appliance.portal import attestation
from attest.pcs import CollateralFetcher, PcsClient, PcsEndpoint
from attest.roots import TrustRoot, intel_sgx_root_ca
from attest.verify import DcapVerifier
from ratls.clock import Clock
from ratls.collateral import CollateralSource, PcsCollateral, ServedCollateral
from ratls.policy import AppraisalPolicy
from ratls.verifier import RatlsVerifier

log = logging.getLogger(__name__)

_APP_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class PortalConfig:
    apps: Mapping[str, str]  # app id -> https URL of its appliance
    policy: AppraisalPolicy
    sim_root: Path | None = None  # SIMULATED evidence only; never with real apps
    pccs_url: str | None = None
    require_nonce: bool = True  # a fresh quote per check: the portal is not caching verdicts


def verifier_for(config: PortalConfig, url: str, clock: Clock) -> RatlsVerifier:
    collateral: CollateralSource
    if config.sim_root is not None:
        root = TrustRoot.from_file(config.sim_root)
        collateral = ServedCollateral(url)  # the simulated authority's collateral lives there
    else:
        root = intel_sgx_root_ca()
        endpoint = PcsEndpoint.pccs(config.pccs_url) if config.pccs_url else PcsEndpoint.intel()
        collateral = PcsCollateral(CollateralFetcher(PcsClient(endpoint)))
    return RatlsVerifier(dcap=DcapVerifier(root), policy=config.policy, collateral=collateral,
                         clock=clock)


MakeVerifier = Callable[[PortalConfig, str, Clock], RatlsVerifier]


def create_portal_app(config: PortalConfig, *, clock: Clock,
                      make_verifier: MakeVerifier = verifier_for) -> Flask:
    app = Flask("appliance.portal.app")

    @app.get("/api/v1/apps/<app_id>/attest")
    def attest_app(app_id: str) -> Response:
        url = config.apps.get(app_id) if set(app_id) <= _APP_ID_CHARS else None
        if url is None:
            raise NotFound(f"no app {app_id[:64]!r}", param="id", code="app_not_found")
        challenge = attestation.parse_challenge(request.args.get("challenge"))
        result = attestation.attest_app(app_id, url, make_verifier(config, url, clock),
                                        clock=clock, challenge=challenge,
                                        require_nonce=config.require_nonce)
        return Response(result.model_dump_json(), mimetype="application/json")

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, HTTPException) and exc.code == 405:
            error = MethodNotAllowed("method not allowed")
        elif isinstance(exc, HTTPException) and exc.code == 404:
            error = NotFound("no such route", code="unknown_route")
        else:
            log.exception("portal request failed")
            error = ApiError("internal error")
        return Response(error.body(), status=error.status, mimetype="application/json")

    return app
