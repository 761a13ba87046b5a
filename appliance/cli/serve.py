"""`appliance serve`: the supervisor, which starts the engine lifecycle and the API server.

Every flag is also an `APPLIANCE_*` environment variable (flag wins). Pass secrets through the
environment (`APPLIANCE_LOAD_TOKEN` or `LOAD_TOKEN`, `APPLIANCE_MANAGEMENT_TOKEN`): flags show
in `ps`. Under systemd, `LoadCredential=load_token:...` (and `management_token`) is better
still. Repeatable flags (`--hostname`, `--engine-arg`, `--engine-env`) take a JSON list in the
environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from appliance.environment import scrub_environment, settings_with_credentials
from appliance.errors import StartupError
from appliance.logs import configure_json_logging
from appliance.settings import Settings

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the appliance: supervisor, engine lifecycle and the RA-TLS API",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--models-dir", metavar="DIR", help="model images (<name>.img + <name>.verity)")
    add("--roothash-dir", metavar="DIR", help="trusted records (<name>.roothash)")
    add("--vllm-port", type=int, metavar="PORT", help="engine port on 127.0.0.1 (default 8000)")
    add("--vllm-bin", metavar="PATH", help="the engine's `vllm` executable (its own venv)")
    add("--engine-arg", action="append", metavar="ARG",
        help="extra engine argument, repeatable; use the = form: --engine-arg=--max-model-len=512")
    add("--engine-env", action="append", metavar="NAME=VALUE",
        help="environment variable for the engine, repeatable (its environment is otherwise clean)")
    add("--engine-profile", choices=["production", "cpu"],
        help="cpu: vLLM's CPU build with fast-start flags (development, CI)")
    add("--engine-user", metavar="USER",
        help="run the engine as this user (no groups, no capabilities); required with --tee tdx")
    add("--insecure-shared-engine-user", action="store_true",
        help="INSECURE: with --tee tdx, run the engine as the service's own user")
    add("--model-access", choices=["dm-verity", "activator", "userspace"],
        help="dm-verity: kernel verity + read-only mount in this process (privileged); activator: "
             "the same through `appliance activator` (the VM's units); userspace: verify a private "
             "copy (no device-mapper). Default: dm-verity with --tee tdx, userspace otherwise")
    add("--activator-socket", metavar="PATH",
        help="the activator's socket (default /run/appliance-activator/activator.sock)")
    add("--load-token", metavar="TOKEN",
        help="bearer token for /v1/models/load|unload (prefer APPLIANCE_LOAD_TOKEN or LOAD_TOKEN)")
    add("--insecure-open-lifecycle", action="store_true",
        help="INSECURE, development only (--tee simulated): lifecycle endpoints without a token")
    add("--listen", metavar="HOST:PORT", help="HTTPS listen address (default 0.0.0.0:8443)")
    add("--hostname", action="append", metavar="NAME",
        help="DNS name or IP for the certificate's SAN, repeatable (default localhost)")
    add("--tee", choices=["tdx", "simulated"], help="evidence source (default tdx)")
    add("--pccs-url", metavar="URL", help="PCCS for collateral with --tee tdx (default Intel PCS)")
    add("--workers", type=int, metavar="N", help="gunicorn worker processes (default 2)")
    add("--threads", type=int, metavar="N",
        help="threads per worker for the routes other than inference (default 32)")
    add("--max-body-bytes", type=int, metavar="N", help="request body limit (default 4 MiB)")
    add("--upstream-idle-timeout", type=float, metavar="S",
        help="seconds without a byte from the engine before a request fails (default 600)")
    add("--request-head-timeout", type=float, metavar="S",
        help="seconds from connecting (TLS included) to a complete request head; on a kept-alive "
             "connection from the request's first byte (default 10)")
    add("--request-body-timeout", type=float, metavar="S",
        help="seconds from the end of a request head to the end of its body (default 60)")
    add("--response-send-timeout", type=float, metavar="S",
        help="seconds a response may wait on a client that reads nothing before the connection "
             "is dropped (default 30)")
    add("--max-connections", type=int, metavar="N",
        help="connections per worker; more are answered 503 and closed (default 1000)")
    add("--attestation-rate", type=float, metavar="N",
        help="/v1/attestation quotes per second per worker after the burst (default 10)")
    add("--attestation-burst", type=int, metavar="N",
        help="/v1/attestation quotes at once per worker; beyond the rate, 429 (default 20)")
    add("--state-dir", metavar="DIR", help="state: simulated authority, sockets, receipts")
    add("--receipts-db", metavar="PATH", help="receipt log (default <state-dir>/receipts.sqlite3)")
    add("--receipts-max", type=int, metavar="N", help="receipts kept, oldest pruned (default 1e6)")
    add("--management-url", metavar="URL", help="management plane for status pushes")
    add("--management-token", metavar="TOKEN",
        help="bearer token for status pushes (prefer APPLIANCE_MANAGEMENT_TOKEN)")
    add("--insecure-management-http", action="store_true",
        help="INSECURE, development only: allow an http:// --management-url on loopback")
    add("--enclave-id", metavar="ID",
        help="this appliance's id in status pushes (default hostname)")
    add("--push-interval", type=float, metavar="S",
        help="seconds between status pushes (default 30)")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose")
    }
    for repeated in ("engine_arg", "engine_env", "hostname"):
        if repeated in given:
            given[repeated] = tuple(given[repeated])
    return settings_with_credentials(Settings, given)


def run(args: argparse.Namespace) -> int:
    configure_json_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"appliance serve: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    # The secrets now live in `settings` only: out of this process's environment block (which
    # /proc shows to every process of this user) and out of everything started from here on.
    scrub_environment()
    # prometheus_client picks its multi-process mode when first imported: set the directory first.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
    from appliance.supervisor.service import build_supervisor, prepare_state_dir

    try:
        prepare_state_dir(settings)
        supervisor = build_supervisor(settings, clock=lambda: datetime.now(UTC))
    except StartupError as exc:
        print(f"appliance serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        supervisor.start()
        return supervisor.run_api_server()
    finally:
        supervisor.stop()
