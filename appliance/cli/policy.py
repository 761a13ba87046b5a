"""`appliance policy init URL|--quote FILE`: a pinned appraisal policy from a verified quote.

Trust on first use, said as such in the file: the appliance (or quote) is verified with nothing
pinned (DCAP to the trust root, TCB status, DEBUG off, and for a URL the key binding), then its
MRTD, RTMR0-2, TD attributes and XFAM (and, with --pin-model-digest, the certificate's model
digest) are written as the policy that `attest`, `chat` and the portal will hold it to.

Exit status: 0 written, 1 the observation did not verify (nothing written), 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from appliance.cli.attest import (
    EXIT_OK,
    EXIT_REFUSED,
    UsageError,
    add_evidence_source_options,
    build_verifier,
    clock_from,
    usage_errors,
)
from attest.collateral_load import collateral_from_bundle_json
from attest.errors import AttestError
from attest.pcs import CollateralFetcher, PcsClient, PcsEndpoint
from attest.policy import validate
from attest.quote import parse_quote
from attest.roots import TrustRoot, intel_sgx_root_ca
from attest.verify import DcapVerifier
from ratls.clock import Clock
from ratls.collateral import PcsCollateral
from ratls.connection import probe
from ratls.errors import RatlsError
from ratls.pinning import (
    UnverifiedObservation,
    policy_from_quote,
    policy_from_result,
    render_policy_toml,
)
from ratls.policy import AppraisalPolicy


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("policy", help="write appraisal policies")
    commands = parser.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    init = commands.add_parser(
        "init",
        help="pin what a verified appliance or quote shows (trust on first use)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("url", nargs="?", help="https://host[:port] of the appliance")
    init.add_argument("--quote", type=Path, metavar="FILE", help="a raw quote file instead of URL")
    add_evidence_source_options(init)
    init.add_argument(
        "--pin-model-digest",
        action="store_true",
        help="also pin the model digest the appliance's certificate carries (URL only)",
    )
    init.add_argument(
        "--insecure-skip-hostname-check",
        action="store_true",
        help="do not check the host against the certificate's names (INSECURE)",
    )
    init.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.set_defaults(func=run_init)


@usage_errors
def run_init(args: argparse.Namespace) -> int:
    if (args.url is None) == (args.quote is None):
        raise UsageError("give the appliance's URL or --quote FILE, not both")
    if args.quote is not None and args.pin_model_digest:
        raise UsageError("--pin-model-digest needs a URL: a quote carries no model digest")
    if args.out is not None and args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists (--force replaces it)")
    clock = clock_from(args)
    try:
        policy = _observe_url(args, clock) if args.url else _observe_quote(args, clock)
    except UnverifiedObservation as exc:
        print(f"appliance policy init: {exc}; nothing written", file=sys.stderr)
        return EXIT_REFUSED
    text = render_policy_toml(policy, written_at=clock())
    if args.out is None:
        sys.stdout.write(text)
    else:
        _write(args.out, text)
        print(f"policy written to {args.out} (trust on first use)", file=sys.stderr)
    return EXIT_OK


def _observe_url(args: argparse.Namespace, clock: Clock) -> AppraisalPolicy:
    verifier = build_verifier(args, clock, policy=AppraisalPolicy.unsafe_unpinned())
    try:
        result = probe(
            args.url,
            verifier,
            clock=clock,
            insecure_skip_hostname_check=args.insecure_skip_hostname_check,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not result.verified:
        print(result.summary(), file=sys.stderr)
    return policy_from_result(result, source=args.url, pin_model_digest=args.pin_model_digest)


def _observe_quote(args: argparse.Namespace, clock: Clock) -> AppraisalPolicy:
    if args.sim_root and not args.collateral:
        raise UsageError("--quote with --sim-root needs --collateral (the simulated bundle)")
    try:
        raw = args.quote.read_bytes()
        root = TrustRoot.from_file(args.sim_root) if args.sim_root else intel_sgx_root_ca()
        collateral_json = args.collateral.read_bytes() if args.collateral else None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    now = clock()
    try:
        quote = parse_quote(raw)
        if collateral_json is not None:
            collateral = collateral_from_bundle_json(collateral_json)
        else:
            endpoint = PcsEndpoint.pccs(args.pccs_url) if args.pccs_url else PcsEndpoint.intel()
            source = PcsCollateral(CollateralFetcher(PcsClient(endpoint)))
            collateral = source.collateral_for(quote, now=now)
        verified = DcapVerifier(root).verify(quote, collateral, now=now)
        # The TD-level rules (no DEBUG, TCB status) hold here as they do for a URL.
        validate(verified, AppraisalPolicy.unsafe_unpinned().tdx)
    except (AttestError, RatlsError) as exc:
        raise UnverifiedObservation(f"{args.quote} does not verify: {exc}") from exc
    return policy_from_quote(verified, source=str(args.quote), observed_at=now)


def _write(path: Path, text: str) -> None:
    # A new file next to the target, then rename: a reader never sees half a policy.
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(partial, path)
