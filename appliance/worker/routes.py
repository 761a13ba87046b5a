"""The Flask app of every route but inference: `create_app(settings, services)`.

The API workers serve it through `appliance.worker.wsgi_bridge` (the inference routes are native
ASGI, `appliance.worker.asgi`). Workers are stateless: the model state comes from the
supervisor's shared state file (one `stat()` per request), lifecycle operations, nonce evidence
and collateral from its control socket, and receipts are read from the shared SQLite log. Every
error is the OpenAI envelope of `appliance.worker.api_errors`, through the one error handler below.
A request body arrives read in full and bounded by the bridge (`asgi_http.read_body`).
"""

from __future__ import annotations

import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed

from appliance.channel.shared_state import SharedState
from appliance.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from appliance.metrics import Metrics
from appliance.settings import Settings
from appliance.worker.api_errors import ERROR_CONTENT_TYPE, as_api_error
from appliance.worker.identity import connection_identity
from appliance.worker.json_body import parse_json_object
from appliance.worker.proxy import InferenceProxy
from appliance.worker.rate_limit import TokenBucket
from appliance.worker.receipt_log import ReceiptLog
from appliance.worker.wsgi_bridge import TLS_CONNECTION_ENVIRON
from ratls.issuer import IdentitySource

# Whole bytes: "abc" is a malformed digest (400), not one that fails to match the record (409).
_HEX_BYTES = re.compile(r"(?:[0-9a-fA-F]{2})+")
_RECEIPT_ID = re.compile(r"[0-9a-f]{32}")


class StateSource(Protocol):
    def current(self) -> SharedState: ...


class ControlChannel(Protocol):
    """The control channel as the app sees it (appliance.channel.control.ControlClient)."""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class WorkerServices:
    state: StateSource
    identity: IdentitySource
    supervisor: ControlChannel
    proxy: InferenceProxy
    receipts: ReceiptLog
    metrics: Metrics
    attestation_limit: TokenBucket


class _InsertionOrderJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with keys in the order the documents build them."""

    sort_keys = False


def create_app(settings: Settings, services: WorkerServices) -> Flask:
    app = Flask("appliance")
    app.json = _InsertionOrderJSONProvider(app)
    metrics = services.metrics
    supervisor = services.supervisor

    @app.before_request
    def _start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        now = time.perf_counter()
        metrics.count_request(route, response.status_code, now - g.get("started", now))
        return response

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        error = as_api_error(_routing_error(exc) or exc, request.method, request.path)
        response = Response(error.body(), status=error.status, mimetype=ERROR_CONTENT_TYPE)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="appliance lifecycle"'
        if isinstance(error, TooManyRequests):
            response.headers["Retry-After"] = str(error.retry_after)
        if isinstance(exc, RoutingMethodNotAllowed):
            allowed = exc.valid_methods or []
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.get("/v1/models")
    def models() -> Response:
        served = services.state.current()
        data = []
        if served.ready:
            data.append({"id": served.model, "object": "model", "owned_by": "appliance",
                         "digest": served.digest})
        return jsonify({"object": "list", "data": data})

    # -- lifecycle -------------------------------------------------------------------------------
    @app.get("/v1/models/status")
    def models_status() -> Response:
        # The engine's log tail may hold request data (an engine can log prompts): operators only.
        operator = _lifecycle_authorized(settings)
        return jsonify(supervisor.call("GET", "/status?engine_log=1" if operator else "/status"))

    @app.post("/v1/models/load")
    def models_load() -> tuple[Response, int]:
        _authorize_lifecycle(settings)
        document = parse_json_object(request.get_data(cache=False))
        model = document.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("`model` is required and must be a non-empty string", param="model")
        digest = document.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _HEX_BYTES.fullmatch(digest)):
            raise BadRequest("`digest` must be a hex string of whole bytes", param="digest",
                             code="invalid_digest")
        body = {"model": model} | ({"digest": digest.lower()} if digest else {})
        return jsonify(supervisor.call("POST", "/load", body)), 202

    @app.post("/v1/models/unload")
    def models_unload() -> tuple[Response, int]:
        _authorize_lifecycle(settings)
        raw = request.get_data(cache=False)
        document = parse_json_object(raw) if raw.strip() else {}
        model = document.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest("`model` must be a string", param="model")
        return jsonify(supervisor.call("POST", "/unload", {"model": model})), 202

    # -- attestation and receipts ----------------------------------------------------------------
    @app.get("/v1/attestation")
    def attestation() -> Response:
        nonce = request.args.get("nonce", "")
        if not _HEX_BYTES.fullmatch(nonce):
            raise BadRequest("`nonce` must be an even-length hex string", param="nonce")
        wait = services.attestation_limit.take()
        if wait is not None:
            raise TooManyRequests(
                f"this worker makes at most {settings.attestation_rate:g} quotes per second "
                f"(bursts of {settings.attestation_burst}); retry in {wait:.1f} s",
                retry_after=math.ceil(wait))
        # The evidence binds the certificate this connection presented (it may predate a rotation).
        identity = connection_identity(request.environ.get(TLS_CONNECTION_ENVIRON),
                                       services.identity)
        certificate = identity.certificate.der.hex()
        return jsonify(supervisor.call("POST", "/attestation",
                                       {"nonce": nonce.lower(), "certificate_der": certificate}))

    @app.get("/v1/attestation/collateral")
    def collateral() -> Response:
        return jsonify(supervisor.call("GET", "/collateral"))

    @app.get("/v1/receipts/<receipt_id>")
    def receipt(receipt_id: str) -> Response:
        if not _RECEIPT_ID.fullmatch(receipt_id):
            raise NotFound(f"no receipt {receipt_id[:64]!r}", param="id", code="receipt_not_found")
        document = services.receipts.get(receipt_id)
        if document is None:
            raise NotFound(f"no receipt {receipt_id} (unknown, or pruned from the bounded log)",
                           param="id", code="receipt_not_found")
        return Response(document, mimetype="application/json")

    # -- operations ------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> Response:
        served = services.state.current()
        return jsonify({"status": "ok", "model_ready": served.ready})

    @app.get("/metrics")
    def prometheus() -> Response:
        # Operational detail (traffic, lifecycle, push failures) is for the operator: same token.
        _authorize_lifecycle(settings)
        return Response(metrics.exposition(), mimetype="text/plain; version=0.0.4; charset=utf-8")

    return app


def _lifecycle_authorized(settings: Settings) -> bool:
    """Whether the request may use the lifecycle: the load token, or the insecure open mode."""
    token = settings.load_token
    if token is None:
        return settings.insecure_open_lifecycle
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.get_secret_value().encode()
    )


def _authorize_lifecycle(settings: Settings) -> None:
    if _lifecycle_authorized(settings):
        return
    if settings.load_token is None:
        raise Forbidden("lifecycle endpoints are closed: no load token is configured on this "
                        "appliance", code="lifecycle_closed")
    raise Unauthorized("a valid `Authorization: Bearer <load token>` is required",
                       code="invalid_token")


def _routing_error(exc: Exception) -> ApiError | None:
    """The error of a request Flask refused before any route ran (no route, wrong method)."""
    if not isinstance(exc, HTTPException):
        return None
    code = exc.code or 500
    if code == 404:
        return NotFound(f"no route {request.method} {request.path}", code="unknown_route")
    if code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if 400 <= code < 500:
        error = BadRequest(exc.description or "bad request")
        error.status = code
        return error
    return None
