"""The API server: gunicorn managing event-loop workers (uvicorn, httptools, uvloop) over RA-TLS.

The supervisor starts it as a child process (`python -m appliance.worker.server`) with the settings
in the environment. `--workers` sets the number of worker processes; each runs one event loop
that serves the inference routes natively (`appliance.worker.asgi`) and every other route through
the Flask app in a thread pool of `--threads` threads (`appliance.worker.wsgi_bridge`). Each worker
builds its own app after the fork (no preloading: SQLite connections, locks and key material are
per process) and serves TLS through the ratls rotating context, whose identity comes from the
supervisor: the worker notices a new generation in the shared state file and fetches the new
certificate and key over the control socket.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import CollectorRegistry

from appliance.channel.control import ControlClient
from appliance.channel.handover import take_handover
from appliance.channel.shared_state import SharedStateReader
from appliance.logs import GunicornJsonLogger
from appliance.metrics import Metrics, mark_worker_dead
from appliance.settings import Settings
from appliance.worker.asgi import ApplianceAsgi
from appliance.worker.engine_client import EngineClient, EngineEndpoint
from appliance.worker.identity import SupervisorIdentitySource
from appliance.worker.proxy import InferenceProxy
from appliance.worker.rate_limit import TokenBucket
from appliance.worker.receipt_log import ReceiptLog
from appliance.worker.receipts import ReceiptRecorder
from appliance.worker.routes import WorkerServices, create_app
from appliance.worker.uvicorn_worker import ApplianceWorker, ConnectionLimits
from appliance.worker.wsgi_bridge import WsgiBridge
from ratls.server import RotatingServerContext

log = logging.getLogger(__name__)

# How long gunicorn lets in-flight requests (streams included) finish on a graceful stop.
GRACEFUL_TIMEOUT = 10
KEEPALIVE = 30


class RatlsGunicornLogger(GunicornJsonLogger):
    """gunicorn names a listener http:// unless it was given certificate files; these listeners
    speak only TLS (each worker wraps them with the RA-TLS context), so the line says https://."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Listening at: ") and args and isinstance(args[0], str):
            args = (args[0].replace("http://", "https://"), *args[1:])
        super().info(msg, *args, **kwargs)


def build_worker(settings: Settings) -> tuple[ApplianceAsgi, RotatingServerContext]:
    """Everything one worker process needs, wired from the settings."""
    state = SharedStateReader(settings.shared_state_file)
    control = ControlClient(settings.control_socket)
    identity = SupervisorIdentitySource(state, control)
    metrics = Metrics(CollectorRegistry())
    receipts = ReceiptLog(settings.receipts_path, settings.receipts_max)
    recorder = ReceiptRecorder(receipts, lambda: datetime.now(UTC), metrics)
    engine = EngineClient(EngineEndpoint("127.0.0.1", settings.vllm_port,
                                         idle_timeout=settings.upstream_idle_timeout))
    services = WorkerServices(
        state=state, identity=identity, supervisor=control,
        proxy=InferenceProxy(engine, recorder.record, metrics),
        receipts=receipts, metrics=metrics,
        attestation_limit=TokenBucket(settings.attestation_rate, settings.attestation_burst,
                                      time.monotonic),
    )
    other_routes = WsgiBridge(create_app(settings, services), settings.threads,
                              settings.max_body_bytes)
    app = ApplianceAsgi(services, other_routes, settings.max_body_bytes)
    return app, RotatingServerContext(identity)


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tls: RotatingServerContext | None = None
        # Read by each worker (ApplianceWorker) when it starts serving.
        self.connection_limits = ConnectionLimits(
            head_timeout=settings.request_head_timeout,
            body_timeout=settings.request_body_timeout,
            send_timeout=settings.response_send_timeout,
            max_connections=settings.max_connections,
        )
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        host, port = settings.listen_address
        options: dict[str, Any] = {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": settings.workers,
            "worker_class": ApplianceWorker,
            # No certfile: the worker takes its TLS context from this hook (asgi_worker).
            "ssl_context": self._ssl_context,
            "keepalive": KEEPALIVE,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 120,
            "accesslog": None,
            "logger_class": RatlsGunicornLogger,
            "child_exit": lambda _server, worker: mark_worker_dead(worker.pid),
            "proc_name": "appliance-api",
            "forwarded_allow_ips": "",
        }
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 24 opens one by default
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> ApplianceAsgi:
        app, self._tls = build_worker(self._settings)
        return app

    def _ssl_context(
        self, config: Any, default_factory: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        if self._tls is None:
            raise RuntimeError("the worker's app is loaded before it accepts connections")
        return self._tls.gunicorn_hook(config, default_factory)


def main() -> int:
    # The load token comes from the supervisor's handover pipe, never from the environment.
    settings = Settings(**take_handover(os.environ))
    ApiServer(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
