"""`appliance simulated quote|collateral`: evidence of the simulated attestation authority.

For development and CI without TDX: the authority lives in a directory (created on first use)
whose `root-ca.pem` a verifier must be given explicitly, e.g.

    appliance simulated quote --authority DIR -o quote.bin
    appliance simulated collateral --authority DIR -o collateral.json
    appliance quote verify --root DIR/root-ca.pem --collateral collateral.json quote.bin

Exit status: 0 written; 1 unusable authority directory or bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from appliance.cli.collateral import add_output_options, write_output
from attest.collateral_documents import TcbStatus
from attest.errors import AttestError
from attest.providers import REPORT_DATA_SIZE
from attest.simulated import (
    SimulatedAuthority,
    SimulatedQuoteProvider,
    simulated_collateral,
)

EXIT_OK = 0
EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    simulated = subparsers.add_parser(
        "simulated", help="SIMULATED quotes and collateral (development only, never genuine)"
    )
    commands = simulated.add_subparsers(dest="simulated_command", required=True, metavar="ACTION")

    quote = commands.add_parser("quote", help="a v4 quote of the simulated TD")
    _add_authority_option(quote)
    quote.add_argument(
        "--report-data",
        type=_report_data,
        default=bytes(REPORT_DATA_SIZE),
        metavar="HEX",
        help="64 bytes of REPORTDATA (default: zeros)",
    )
    add_output_options(quote)
    quote.set_defaults(func=run_quote)

    collateral = commands.add_parser("collateral", help="collateral for the simulated quotes")
    _add_authority_option(collateral)
    collateral.add_argument("--validity-days", type=int, default=30, metavar="DAYS")
    collateral.add_argument(
        "--tcb-status",
        choices=[s.value for s in TcbStatus],
        default=TcbStatus.UP_TO_DATE.value,
        help="how the collateral grades the platform (default UpToDate)",
    )
    add_output_options(collateral)
    collateral.set_defaults(func=run_collateral)


def _add_authority_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authority",
        type=Path,
        required=True,
        metavar="DIR",
        help="simulated authority directory (created if empty)",
    )


def run_quote(args: argparse.Namespace) -> int:
    authority = _authority(args)
    if authority is None:
        return EXIT_FAILED
    write_output(SimulatedQuoteProvider(authority).get_quote(args.report_data), args.output)
    return EXIT_OK


def run_collateral(args: argparse.Namespace) -> int:
    authority = _authority(args)
    if authority is None:
        return EXIT_FAILED
    pieces = simulated_collateral(
        authority,
        now=args.at or dt.datetime.now(dt.UTC),
        validity=dt.timedelta(days=args.validity_days),
        tcb_status=args.tcb_status,
    )
    write_output(pieces.to_bundle_json().encode(), args.output)
    return EXIT_OK


def _authority(args: argparse.Namespace) -> SimulatedAuthority | None:
    try:
        authority = SimulatedAuthority.load_or_create(
            args.authority, now=args.at or dt.datetime.now(dt.UTC)
        )
    except AttestError as exc:
        print(f"appliance simulated: {exc}", file=sys.stderr)
        return None
    print(
        f"SIMULATED evidence; trust root {authority.directory / 'root-ca.pem'} "
        f"(SHA-256 {authority.root_sha256})",
        file=sys.stderr,
    )
    return authority


def _report_data(text: str) -> bytes:
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("REPORTDATA must be hex") from None
    if len(data) != REPORT_DATA_SIZE:
        raise argparse.ArgumentTypeError(f"REPORTDATA must be {REPORT_DATA_SIZE} bytes")
    return data
