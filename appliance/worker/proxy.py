"""The OpenAI pass-through: requests go to the engine byte for byte, streams event by event.

Only what routing needs is read from a request (`appliance.worker.json_body`, off the event loop
for a large body): it must be a JSON object, `model` must name the served model, `stream` (if
present) must be a boolean. The body is forwarded unchanged and the
engine's response body is returned unchanged; a stream is relayed chunk by chunk as the engine
writes it (uvicorn writes one SSE event per chunk), one ASGI body message per chunk, with nothing
buffered on the way. Every engine response gets a receipt; its id goes out in `X-Receipt-Id`
before the first body byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from appliance.channel.shared_state import SharedState
from appliance.errors import ApiError, MisdirectedRequest, NotFound, ServiceUnavailable
from appliance.metrics import Metrics
from appliance.worker.asgi_http import Receive, Send, send_response
from appliance.worker.engine_client import EngineClient, EngineResponse
from appliance.worker.json_body import RoutingFields, read_routing_fields
from ratls.issuer import Identity
from ratls.receipts import Outcome

log = logging.getLogger(__name__)

INFERENCE_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
RECEIPT_HEADER = "X-Receipt-Id"
_RECEIPT_HEADER_NAME = RECEIPT_HEADER.lower().encode()
# The last chunks of a stream: enough for the final usage chunk and `data: [DONE]` (an engine writes
# one event per chunk, or several together).
_STREAM_TAIL_CHUNKS = 4


@dataclass(frozen=True)
class ExchangeRecord:
    """What a receipt attests about one request/response pair (hashes, never contents)."""

    receipt_id: str
    route: str
    model: str
    request_sha256: str
    response_sha256: str
    status: int
    usage: dict[str, Any] | None
    streamed: bool
    outcome: Outcome


class _ExchangeFacts(TypedDict):
    """The fields of an `ExchangeRecord` known once the engine's response headers are in."""

    receipt_id: str
    route: str
    model: str
    request_sha256: str
    status: int


# Builds, signs (with the given identity) and stores the receipt for one exchange
# (appliance.worker.receipts.ReceiptRecorder.record).
RecordReceipt = Callable[[ExchangeRecord, Identity], None]


def require_served_model(fields: RoutingFields, served: SharedState) -> str:
    """The model a request may be forwarded for; raises 503 (none ready) or 404 (another)."""
    if not served.ready:
        raise ServiceUnavailable(f"no model is ready (status: {served.status.get('proxy_status')})")
    if fields.model != served.model:
        raise NotFound(
            f"the model `{fields.model}` does not exist; this appliance serves `{served.model}`",
            param="model", code="model_not_found",
        )
    return fields.model


class InferenceProxy:
    """The native ASGI handler of an inference request, once its body is read and checked."""

    def __init__(self, engine: EngineClient, record_receipt: RecordReceipt,
                 metrics: Metrics) -> None:
        self._engine = engine
        self._record = record_receipt
        self._metrics = metrics

    def close(self) -> None:
        self._engine.close()

    async def forward(self, route: str, body: bytes, served: SharedState, identity: Identity,
                      receive: Receive, send: Send, started: float) -> None:
        """Answers the request. `identity`: the one the client's connection attested (its
        certificate); `started`: perf_counter() at the request's start (for the latency metric).
        Raises ApiError before the response starts; after that, failures end the stream."""
        model = require_served_model(await read_routing_fields(body), served)
        require_attested_model(identity, served)
        # The client may go while the engine works (before its headers, or mid-stream): this
        # request is cancelled then, which drops the engine's connection, so that the engine
        # aborts the generation instead of finishing it for nobody.
        request = asyncio.current_task()
        if request is None:
            raise RuntimeError("an inference request is forwarded from inside an asyncio task")
        watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive))
        watcher.add_done_callback(lambda done: done.cancelled() or request.cancel())
        try:
            await self._exchange(route, body, model, identity, send, started, watcher.done)
        except asyncio.CancelledError:
            if watcher.cancelled() or not watcher.done():
                raise  # cancelled by the server (a stop), not by the client's disconnect
            request.uncancel()
        finally:
            watcher.cancel()

    async def _exchange(self, route: str, body: bytes, model: str, identity: Identity, send: Send,
                        started: float, client_gone: Callable[[], bool]) -> None:
        receipt_id = uuid.uuid4().hex
        request_sha256 = hashlib.sha256(body).hexdigest()
        upstream = await self._engine.request("POST", route, body)
        headers = upstream.passthrough_headers()
        headers.append((_RECEIPT_HEADER_NAME, receipt_id.encode()))
        facts: _ExchangeFacts = {"receipt_id": receipt_id, "route": route, "model": model,
                 "request_sha256": request_sha256, "status": upstream.status}
        content_type = upstream.header(b"content-type") or b""
        if content_type.startswith(b"text/event-stream"):
            if upstream.header(b"cache-control") is None:
                headers.append((b"cache-control", b"no-cache"))
            headers.append((b"x-accel-buffering", b"no"))  # tells any reverse proxy not to buffer
            self._metrics.count_request(route, upstream.status, time.perf_counter() - started)
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": headers})
            await self._relay(route, upstream, facts, identity, send, client_gone)
            return
        try:
            payload = await upstream.read()
        finally:
            upstream.close()
        if upstream.status >= 400:
            enveloped = engine_error_envelope(upstream.status, payload)
            if enveloped is not None:
                payload = enveloped
                headers = [(k, v) for k, v in headers if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
        # The receipt is signed and stored on the event loop, which it holds for ~250 us of CPU
        # (measured in a worker under bench/proxy.py); a thread for it was not measured.
        self._record(ExchangeRecord(
            response_sha256=hashlib.sha256(payload).hexdigest(), usage=_usage_of_json(payload),
            streamed=False, outcome="complete", **facts,
        ), identity)
        self._metrics.count_request(route, upstream.status, time.perf_counter() - started)
        await send_response(send, upstream.status, headers, payload)

    async def _relay(self, route: str, upstream: EngineResponse, facts: _ExchangeFacts,
                     identity: Identity, send: Send, client_gone: Callable[[], bool]) -> None:
        """Relays the stream event by event. The response has started: nothing is raised but a
        cancellation (the client went: the outcome stays "client_disconnected").

        A stream whose final event (`data: [DONE]`) was handed over while the client was still
        there is complete, even if the client then closes before the engine ends its body: the
        stock openai SDK stops reading at [DONE] and closes."""
        metrics = self._metrics
        metrics.streams_started.labels(route=route).inc()
        hasher = hashlib.sha256()
        events = 0
        tail: deque[bytes] = deque(maxlen=_STREAM_TAIL_CHUNKS)
        outcome: Outcome = "client_disconnected"
        try:
            async for chunk in upstream.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # Counted once handed to the server. When the client goes, this request is
                # cancelled at its next await; a chunk handed over before that (uvicorn drops it
                # once it has seen the disconnect) is still counted.
                hasher.update(chunk)
                events += chunk.count(b"\n\n")
                tail.append(chunk)
                # Cheap test first: the final event ends in "]" (then blank lines).
                if (
                    chunk.rstrip(b"\r\n").endswith(b"]")
                    and not client_gone()
                    and _ends_with_final_event(tail)
                ):
                    outcome = "complete"
            await send({"type": "http.response.body", "body": b""})
            outcome = "complete"
        except Exception as error:
            # The client sees a truncated stream (no terminating chunk, no [DONE]): uvicorn closes
            # the connection when the app returns without completing the response.
            outcome = "engine_failed"
            if isinstance(error, ApiError):
                log.warning("stream %s ended by the engine: %s", facts["receipt_id"], error.message)
            else:
                log.exception("stream %s failed", facts["receipt_id"])
        finally:
            upstream.close()
            metrics.relayed_events.labels(route=route).inc(events)
            metrics.streams_finished.labels(route=route, outcome=outcome).inc()
            try:
                self._record(ExchangeRecord(
                    response_sha256=hasher.hexdigest(), usage=_usage_of_sse(b"".join(tail)),
                    streamed=True, outcome=outcome, **facts,
                ), identity)
            except Exception:
                # The stream went out already; its X-Receipt-Id will answer 404.
                log.exception("no receipt for stream %s", facts["receipt_id"])


def engine_error_envelope(status: int, payload: bytes) -> bytes | None:
    """The OpenAI envelope for an engine error that is not in it (FastAPI's `{"detail": ...}`
    for an unknown route, say), with the same status; None when the payload is an envelope."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return None
    detail = document.get("detail") if isinstance(document, dict) else None
    message = f"the engine answered {status}" + (f": {detail}" if isinstance(detail, str) else "")
    return ApiError.for_status(status, message, code="engine_error").body()


_FINAL_EVENT = b"data: [DONE]"


def _ends_with_final_event(tail: deque[bytes]) -> bool:
    """The stream so far ends with OpenAI's terminating event (split across chunks or not)."""
    return b"".join(tail).rstrip(b"\r\n").endswith(_FINAL_EVENT)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def require_attested_model(identity: Identity, served: SharedState) -> None:
    """The connection's certificate must carry the digest of the model served now.

    A connection verified before a model change attested other weights (or none): answering on it
    would break what the tenant checked. 421 tells the client to reconnect, which gives it the
    re-issued certificate to verify.
    """
    attested = identity.model_digest.hex() if identity.model_digest else None
    if attested != served.digest:
        raise MisdirectedRequest(
            f"this connection's certificate attests model digest {attested or 'none'}, but the "
            f"appliance now serves {served.model} ({served.digest}); reconnect and verify again"
        )


def _usage_of_json(payload: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    usage = document.get("usage") if isinstance(document, dict) else None
    return usage if isinstance(usage, dict) else None


def _usage_of_sse(tail: bytes) -> dict[str, Any] | None:
    """The usage object of the last `data:` event that has one (the final usage chunk)."""
    for event in reversed(tail.split(b"\n\n")):
        line = event.strip()
        if not line.startswith(b"data:") or b'"usage"' not in line:
            continue
        usage = _usage_of_json(line[5:])
        if usage is not None:
            return usage
    return None
