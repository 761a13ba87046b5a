"""`appliance console`: the fleet console. Receives signed status pushes
(`POST /api/v1/enclave/runtime-status`) from the appliances of a registry file and shows them
(`GET /api/v1/enclaves`, `/metrics`, the fleet page `/`), and serves the developer portal for
them (`GET /api/v1/apps/<id>/attest[?challenge=HEX]`, the page `/apps/<id>`).

Serves plain HTTP: on loopback, or behind the console's own TLS front end. The management token
(the Bearer token appliances push with) is read from `APPLIANCE_CONSOLE_MANAGEMENT_TOKEN` or
`$CREDENTIALS_DIRECTORY/management_token`, never from a flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.environment import scrub_environment, settings_with_credentials
from appliance.logs import GunicornJsonLogger, configure_json_logging

if TYPE_CHECKING:
    from appliance.console.settings import ConsoleSettings

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
TOKEN_VARIABLE = "APPLIANCE_CONSOLE_MANAGEMENT_TOKEN"  # noqa: S105 - a name, not a token


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "console", help="fleet console: check status pushes, fleet and portal pages",
        description=__doc__)
    add = parser.add_argument
    add("--registry", type=Path, metavar="FILE",
        help="the appliances (TOML or JSON: id, url, policy, load_token, simulated_root)")
    add("--listen", metavar="HOST:PORT", help="where to serve (default 127.0.0.1:8091)")
    add("--state-db", type=Path, metavar="PATH", help="the console's SQLite state")
    add("--pccs-url", metavar="URL", help="collateral for TDX appliances from a PCCS "
        "(default Intel PCS)")
    add("--max-push-age", type=float, metavar="S",
        help="refuse pushes older than this (default 300)")
    add("--max-clock-skew", type=float, metavar="S",
        help="refuse pushes dated further ahead than this (default 60)")
    add("--threads", type=int, metavar="N", help="request threads (default 8)")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ConsoleSettings:
    from appliance.console.settings import ConsoleSettings

    given = {k: v for k, v in vars(args).items()
             if k not in ("func", "command", "verbose") and v is not None}
    return settings_with_credentials(ConsoleSettings, given)


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gunicorn.app.base import BaseApplication
    from pydantic import ValidationError

    from appliance.console.errors import ConsoleError
    from appliance.console.wiring import build_console_app
    from appliance.settings import split_listen

    configure_json_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"appliance console: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    # The token now lives in `settings` only; out of the environment block /proc shows.
    scrub_environment((TOKEN_VARIABLE,))
    try:
        app = build_console_app(settings, clock=lambda: datetime.now(UTC))
    except ConsoleError as exc:
        print(f"appliance console: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    host, port = split_listen(settings.listen)

    class ConsoleServer(BaseApplication):
        def load_config(self) -> None:
            # One worker: the verdict cache is per process, and the state is SQLite.
            options: dict[str, Any] = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "worker_class": "gthread", "workers": 1, "threads": settings.threads,
                "logger_class": GunicornJsonLogger,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    log.info("console serving on %s (registry %s)", settings.listen, settings.registry)
    ConsoleServer().run()
    return 0
