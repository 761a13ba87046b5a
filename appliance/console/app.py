"""The console's HTTP API (Flask, served by gunicorn; JSON only).

- `POST /api/v1/enclave/runtime-status` (appliances, `Authorization: Bearer <management
  token>`): a signed status push, checked as `appliance/console/intake.py` says; 200 when
  accepted, otherwise the error envelope with the refusal's reason as its `code`.
- `GET /api/v1/enclaves` (operators): every registered appliance with its last accepted status,
  attestation verdict, last push and refusal counts (`appliance/console/fleet.py`).
- `GET /metrics` (operators): the same counts for Prometheus.
- `GET /healthz`: liveness.
- `GET /` (operators): the fleet page (`appliance/console/fleet_page.py`).
- `GET /api/v1/apps/<id>/attest` and `GET /apps/<id>` (developers): the portal
  (`appliance/console/portal.py`).

Pages are server-rendered (Jinja autoescape) with static files from the package, under a
Content-Security-Policy that allows scripts and styles from the console only: no inline script,
no inline event handler, nothing from elsewhere.

The reads need no token: they show what appliances already publish to anyone (their status at
`/v1/models/status`, their attestation evidence) and the console's own counts. Serve plain HTTP
on loopback, or behind a TLS front end: pushes carry the management token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from pydantic import SecretStr
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from appliance.console.errors import BodyTooLarge, InvalidToken, Refused
from appliance.console.fleet import fleet_document
from appliance.console.fleet_page import fleet_blueprint
from appliance.console.intake import PushIntake
from appliance.console.metrics import exposition
from appliance.console.portal import portal_blueprint
from appliance.console.registry import Registry
from appliance.console.store import ConsoleStore
from appliance.errors import ApiError, MethodNotAllowed, NotFound
from appliance.status_push import PUSH_PATH
from ratls.clock import Clock
from ratls.verifier import RatlsVerifier

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Errors under these paths are pages; everywhere else the JSON envelope.
PAGE_PATHS = ("/", "/apps/")


@dataclass(frozen=True)
class ConsoleConfig:
    registry: Registry
    management_token: SecretStr
    max_body_bytes: int


def create_console_app(config: ConsoleConfig, *, intake: PushIntake, store: ConsoleStore,
                       clock: Clock, verifiers: Mapping[str, RatlsVerifier]) -> Flask:
    """`verifiers`: each registered enclave's, by id (its policy and roots)."""
    app = Flask("appliance.console.app")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes

    def fleet() -> dict[str, Any]:
        return fleet_document(config.registry, store.statuses(), store.refusals(), now=clock())

    app.register_blueprint(fleet_blueprint(fleet))
    app.register_blueprint(portal_blueprint(config.registry, verifiers, clock=clock))

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.post(PUSH_PATH)
    def receive_push() -> Response:
        now = clock()
        try:
            # 1. The token, before a byte of the body is read.
            if not _bearer_matches(request.headers.get("Authorization"),
                                   config.management_token):
                raise InvalidToken("missing or wrong management token", check="authorization")
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                raise BodyTooLarge("push body too large", check="size",
                                   expected=f"<= {config.max_body_bytes} bytes") from None
            accepted = intake.receive(body, now=now)
        except Refused as refusal:
            store.count_refusal(enclave_id=refusal.enclave_id, reason=refusal.code,
                                check=refusal.check, message=refusal.message, at=now)
            log.warning("push refused (%s, enclave %s): %s", refusal.code,
                        refusal.enclave_id or "-", refusal.message)
            raise
        return jsonify({
            "accepted": True,
            "enclave_id": accepted.enclave_id,
            "certificate_sha256": accepted.certificate_sha256,
            "pushes_accepted": accepted.pushes_accepted,
        })

    @app.get("/api/v1/enclaves")
    def enclaves() -> Response:
        return jsonify(fleet())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(store.statuses(), store.refusals()),
                        mimetype="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        error: ApiError
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, HTTPException) and exc.code == 405:
            error = MethodNotAllowed("method not allowed")
        elif isinstance(exc, HTTPException) and exc.code == 404:
            error = NotFound("no such route", code="unknown_route")
        elif isinstance(exc, HTTPException) and exc.code is not None:
            error = ApiError.for_status(exc.code, exc.description or exc.name)
        else:
            log.exception("console request failed")
            error = ApiError("internal error")
        if request.path == PAGE_PATHS[0] or request.path.startswith(PAGE_PATHS[1:]):
            return Response(render_template("error.html", error=error, path=request.path),
                            status=error.status, mimetype="text/html")
        headers: dict[str, Any] = {}
        if isinstance(error, InvalidToken):
            headers["WWW-Authenticate"] = "Bearer"
        return Response(error.body(), status=error.status, mimetype="application/json",
                         headers=headers)

    return app


def _bearer_matches(header: str | None, token: SecretStr) -> bool:
    scheme, _, presented = (header or "").partition(" ")
    # compare_digest takes the same time wherever the strings differ; run it whatever the scheme.
    matches = hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode())
    return scheme.lower() == "bearer" and matches
