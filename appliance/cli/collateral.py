"""`appliance collateral fetch`: DCAP collateral as a bundle JSON file.

Gets TCB info, QE identity and CRLs from Intel's PCS (or a PCCS) through the on-disk cache, for
an FMSPC and PCK CA given directly or read from a quote's PCK certificate.
Exit status: 0 written; 1 collateral unavailable or malformed, unreadable quote.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from cryptography import x509

from attest.collateral import Collateral, pck_ca_of
from attest.errors import AttestError, FormatError
from attest.pck import pck_extension_of
from attest.pcs import CollateralCache, CollateralFetcher, PckCa, PcsClient, PcsEndpoint
from attest.quote import parse_quote

EXIT_OK = 0
EXIT_FAILED = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "appliance" / "collateral"


def register(subparsers: argparse._SubParsersAction) -> None:
    collateral = subparsers.add_parser("collateral", help="DCAP collateral from the PCS or a PCCS")
    commands = collateral.add_subparsers(dest="collateral_command", required=True, metavar="ACTION")

    fetch = commands.add_parser("fetch", help="fetch collateral from Intel's PCS or a PCCS")
    target = fetch.add_mutually_exclusive_group(required=True)
    target.add_argument("--fmspc", metavar="HEX", help="platform FMSPC (12 hex digits)")
    target.add_argument("--quote", type=Path, metavar="FILE", help="take FMSPC and CA from a quote")
    fetch.add_argument(
        "--ca",
        choices=[c.value for c in PckCa],
        default=PckCa.PLATFORM.value,
        help="PCK CA whose CRL to fetch, with --fmspc (default platform)",
    )
    fetch.add_argument("--pccs", metavar="URL", help="PCCS base URL (default: Intel's PCS)")
    fetch.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"collateral cache (default {default_cache_dir()})",
    )
    fetch.add_argument("--offline", action="store_true", help="use the cache only, no network")
    fetch.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    add_output_options(fetch)
    fetch.set_defaults(func=run_fetch)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the bundle JSON here (default: standard output)",
    )
    parser.add_argument(
        "--at",
        type=utc_time,
        default=None,
        metavar="TIME",
        help="evaluate at this ISO 8601 time instead of now",
    )


def run_fetch(args: argparse.Namespace) -> int:
    now = args.at or dt.datetime.now(dt.UTC)
    endpoint = PcsEndpoint.pccs(args.pccs) if args.pccs else PcsEndpoint.intel()
    client = None if args.offline else PcsClient(endpoint, timeout=args.timeout)
    try:
        fmspc, ca = _target(args)
        cache = CollateralCache(args.cache_dir or default_cache_dir())
        fetcher = CollateralFetcher(client, cache, endpoint=endpoint, offline=args.offline)
        collateral = fetcher.collateral(fmspc, ca, now=now)
    except AttestError as exc:
        print(f"appliance collateral fetch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if client is not None:
            client.close()
    return _write(collateral.to_bundle_json(), args.output, collateral)


def _target(args: argparse.Namespace) -> tuple[str, PckCa]:
    if args.fmspc:
        return args.fmspc, PckCa(args.ca)
    try:
        raw = args.quote.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {args.quote}: {exc.strerror}", check="quote file") from exc
    try:
        leaf = x509.load_der_x509_certificate(parse_quote(raw).pck_cert_chain[0])
    except ValueError as exc:
        raise FormatError(f"{args.quote}: malformed PCK certificate", check="pck") from exc
    return pck_extension_of(leaf).fmspc.hex(), PckCa(pck_ca_of(leaf))


def _write(text: str, output: Path | None, collateral: Collateral) -> int:
    write_output(text.encode(), output)
    identity = collateral.identity
    print(
        f"FMSPC {identity.fmspc}, TCB evaluation {identity.tcb_evaluation_data_number}, "
        f"TCB info valid until {identity.tcb_info_next_update:%Y-%m-%dT%H:%M:%SZ}",
        file=sys.stderr,
    )
    return EXIT_OK


def write_output(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)


def utc_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)  # Python >= 3.11 reads "Z"
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give the time zone (e.g. 2026-01-10T00:00:00Z)")
    return moment.astimezone(dt.UTC)
