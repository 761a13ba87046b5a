"""The console's developer portal: its registered appliances are the apps.

- `GET /api/v1/apps/<id>/attest[?challenge=HEX]`: the attestation result as JSON (the same
  procedure and document as `appliance portal`, `appliance/portal/attestation.py`), under the
  app's own policy and, for a simulated app, its simulated root. With a challenge (16-64 bytes
  in hex) the appliance is asked for nonce evidence binding it; without, for a random nonce.
- `GET /apps/<id>[?challenge=HEX]`: the same result as a page (`appliance/console/app_view.py`).

An unknown id is a 404 (envelope or page); a refusal or an unreachable app is a result (200).
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, render_template, request

from appliance.console.app_view import app_view
from appliance.console.registry import RegisteredEnclave, Registry
from appliance.errors import NotFound
from appliance.portal.attestation import attest_app, parse_challenge
from ratls.clock import Clock
from ratls.result import AttestationResult
from ratls.verifier import RatlsVerifier


class AppNotFound(NotFound):
    code = "app_not_found"


def portal_blueprint(registry: Registry, verifiers: Mapping[str, RatlsVerifier], *,
                     clock: Clock) -> Blueprint:
    portal = Blueprint("portal", __name__)

    def attest(app_id: str) -> tuple[RegisteredEnclave, bytes | None, AttestationResult]:
        enclave = registry.get(app_id)
        if enclave is None:
            raise AppNotFound(f"no app {app_id[:64]!r}", param="id")
        challenge = parse_challenge(request.args.get("challenge"))
        # Nonce mode always: a fresh quote per look, not a cached certificate's verdict.
        result = attest_app(app_id, enclave.url, verifiers[app_id], clock=clock,
                            challenge=challenge, require_nonce=True)
        return enclave, challenge, result

    @portal.get("/api/v1/apps/<app_id>/attest")
    def attest_json(app_id: str) -> Response:
        _, _, result = attest(app_id)
        return Response(result.model_dump_json(), mimetype="application/json")

    @portal.get("/apps/<app_id>")
    def attest_page(app_id: str) -> str:
        enclave, challenge, result = attest(app_id)
        return render_template("app.html", view=app_view(enclave, result, challenge=challenge))

    return portal
