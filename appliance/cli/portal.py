"""`appliance portal`: the developer portal's attestation endpoint (`GET /api/v1/apps/<id>/attest`).

Serves plain HTTP: put it behind the portal's own TLS front end. Apps are `--app ID=URL`,
repeatable (or `APPLIANCE_PORTAL_APPS` as a JSON object).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from appliance.logs import GunicornJsonLogger, configure_json_logging
from appliance.settings import split_listen

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("portal", help="developer portal: attest apps server-side",
                                   description=__doc__)
    parser.add_argument("--app", action="append", default=[], metavar="ID=URL",
                        help="an app id and the https URL of its appliance, repeatable")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="appraisal policy (TOML/JSON); it must pin MRTD and RTMR0-2")
    parser.add_argument("--unsafe-unpinned", action="store_true",
                        help="attest apps whose MRTD/RTMR0-2 the policy leaves unpinned (UNSAFE)")
    parser.add_argument("--sim-root", type=Path, metavar="PEM",
                        help="trust this SIMULATED root instead of Intel's (development only)")
    parser.add_argument("--pccs-url", metavar="URL",
                        help="collateral from a PCCS (default Intel PCS)")
    parser.add_argument("--no-nonce", action="store_true",
                        help="certificate binding only (default: a fresh quote for a nonce)")
    parser.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    parser.set_defaults(func=run)


def parse_apps(items: list[str]) -> dict[str, str]:
    apps: dict[str, str] = json.loads(os.environ.get("APPLIANCE_PORTAL_APPS", "{}"))
    for item in items:
        app_id, sep, url = item.partition("=")
        if not sep or not app_id or not url.startswith("https://"):
            raise ValueError(f"--app takes ID=https://HOST[:PORT], got {item!r}")
        apps[app_id] = url
    return apps


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gunicorn.app.base import BaseApplication

    from appliance.portal.app import PortalConfig, create_portal_app
    from checks.errors import CheckedError
    from ratls.policy import AppraisalPolicy

    configure_json_logging()
    try:
        policy = AppraisalPolicy.load(args.policy) if args.policy else AppraisalPolicy()
        if args.unsafe_unpinned:
            policy = policy.allowing_unpinned_unsafely()
        config = PortalConfig(
            apps=parse_apps(args.app),
            policy=policy,
            sim_root=args.sim_root, pccs_url=args.pccs_url, require_nonce=not args.no_nonce,
        )
        host, port = split_listen(args.listen)
    except (ValueError, OSError, CheckedError) as exc:
        print(f"appliance portal: {exc}", file=sys.stderr)
        return 2
    app = create_portal_app(config, clock=lambda: datetime.now(UTC))

    class PortalServer(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}", "worker_class": "gthread",
                "workers": 1, "threads": 8, "logger_class": GunicornJsonLogger,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    log.info("portal serving %d app(s) on %s", len(config.apps), args.listen)
    PortalServer().run()
    return 0
