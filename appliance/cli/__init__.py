"""`appliance` command line: one subcommand module per area, registered below."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from appliance.cli import (
    activator,
    attest,
    collateral,
    console,
    model,
    policy,
    portal,
    quote,
    serve,
    simulated,
    verity,
)

# Each module has `register(subparsers)`, which adds its commands and sets `func` on their parsers:
# `func(args) -> int` returns the exit status.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    quote,
    verity,
    model,
    serve,
    activator,
    collateral,
    simulated,
    attest,
    policy,
    portal,
    console,
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance",
        description=(
            "Confidential inference appliance: TDX evidence, RA-TLS, verified model images."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Quiet by default: a command's own output is its answer; libraries (httpx, the collateral
    # cache) speak with -v. `serve`, `portal` and `console` set up their own (JSON) logging.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
