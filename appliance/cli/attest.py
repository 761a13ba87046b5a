"""`appliance attest URL` and `appliance chat URL`: verify an appliance's RA-TLS, then talk to it.

Exit status: 0 verified (and, for chat, answered), 1 refused or failed, 2 usage errors (argparse,
unreadable files, bad --at).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from attest.collateral_load import collateral_from_bundle_json
from attest.errors import AttestError
from attest.pcs import CollateralFetcher, PcsClient, PcsEndpoint
from attest.roots import TrustRoot, intel_sgx_root_ca
from attest.verify import DcapVerifier
from ratls.clock import Clock, system_clock
from ratls.collateral import CollateralSource, PcsCollateral, ServedCollateral, StaticCollateral
from ratls.connection import ConnectionGate, probe
from ratls.errors import AttestationRefused, RatlsError
from ratls.httpx_client import httpx_client_for
from ratls.policy import AppraisalPolicy
from ratls.verifier import RatlsVerifier

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument value that argparse cannot check (unreadable file, bad time)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    attest = subparsers.add_parser(
        "attest",
        help="verify an appliance's RA-TLS certificate (DCAP + policy + key binding)",
        description="Connect to URL, verify the TDX quote in its TLS certificate, print the "
        "AttestationResult. Sends nothing but the handshake (and, with --nonce, one "
        "attestation request).",
    )
    _add_verification_options(attest)
    attest.add_argument("--json", action="store_true", help="print the AttestationResult as JSON")
    attest.set_defaults(func=run_attest)

    chat = subparsers.add_parser(
        "chat",
        help="verify an appliance, then send one chat completion through the openai SDK",
    )
    _add_verification_options(chat)
    chat.add_argument("--model", required=True, help="served model name")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--max-tokens", type=int, default=256, metavar="N")
    chat.add_argument("--stream", action="store_true", help="print the answer as it streams")
    chat.add_argument(
        "--api-key", default="unused", help="bearer token, if the appliance wants one"
    )
    chat.set_defaults(func=run_chat)


def _add_verification_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="https://host[:port] of the appliance")
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="appraisal policy (TOML or JSON; `appliance policy init` writes one); it must "
        "pin MRTD and RTMR0-2",
    )
    parser.add_argument(
        "--unsafe-unpinned",
        action="store_true",
        help="accept any genuine TD when the policy (or its absence) leaves MRTD or RTMR0-2 "
        "unpinned (UNSAFE: the operator can run any image)",
    )
    parser.add_argument(
        "--nonce",
        action="store_true",
        help="demand a fresh quote for a random nonce on the connection",
    )
    add_evidence_source_options(parser)
    parser.add_argument(
        "--insecure-skip-hostname-check",
        action="store_true",
        help="do not check the host against the certificate's names (INSECURE)",
    )


def add_evidence_source_options(parser: argparse.ArgumentParser) -> None:
    """The trust root, the collateral source and the verification time."""
    parser.add_argument(
        "--sim-root",
        type=Path,
        metavar="PEM",
        help="trust this SIMULATED root instead of Intel's (development only)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--collateral",
        type=Path,
        metavar="BUNDLE",
        help="collateral bundle (dcap-qvl QuoteCollateralV3 JSON)",
    )
    source.add_argument("--pccs-url", metavar="URL", help="fetch collateral from this PCCS")
    parser.add_argument("--at", metavar="ISO8601", help="verify as of this time (default: now)")


def build_verifier(
    args: argparse.Namespace, clock: Clock, *, policy: AppraisalPolicy | None = None
) -> RatlsVerifier:
    """The verifier the options describe (`policy` overrides theirs). Raises UsageError for
    unreadable inputs."""
    try:
        root = TrustRoot.from_file(args.sim_root) if args.sim_root else intel_sgx_root_ca()
        if policy is None:
            policy = AppraisalPolicy.load(args.policy) if args.policy else AppraisalPolicy()
            if args.unsafe_unpinned:
                policy = policy.allowing_unpinned_unsafely()
        collateral: CollateralSource
        if args.collateral:
            collateral = StaticCollateral(collateral_from_bundle_json(args.collateral.read_bytes()))
        elif args.pccs_url:
            collateral = PcsCollateral(
                CollateralFetcher(PcsClient(PcsEndpoint.pccs(args.pccs_url)))
            )
        elif args.sim_root:
            collateral = ServedCollateral(args.url)  # the simulated authority lives only there
        else:
            collateral = PcsCollateral(CollateralFetcher(PcsClient(PcsEndpoint.intel())))
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except (AttestError, RatlsError) as exc:
        raise UsageError(str(exc)) from exc
    return RatlsVerifier(dcap=DcapVerifier(root), policy=policy, collateral=collateral, clock=clock)


def clock_from(args: argparse.Namespace) -> Clock:
    if args.at is None:
        return system_clock
    try:
        at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--at is not an ISO 8601 time: {args.at!r}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return lambda: at


def usage_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UsageError as exc:
            print(f"appliance {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return wrapper


@usage_errors
def run_attest(args: argparse.Namespace) -> int:
    clock = clock_from(args)
    verifier = build_verifier(args, clock)
    try:
        result = probe(
            args.url,
            verifier,
            clock=clock,
            require_nonce=args.nonce,
            insecure_skip_hostname_check=args.insecure_skip_hostname_check,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(result.model_dump_json(indent=2) if args.json else result.summary())
    return EXIT_OK if result.verified else EXIT_REFUSED


@usage_errors
def run_chat(args: argparse.Namespace) -> int:
    import openai

    clock = clock_from(args)
    verifier = build_verifier(args, clock)
    gate = ConnectionGate(
        verifier,
        clock=clock,
        require_nonce=args.nonce,
        insecure_skip_hostname_check=args.insecure_skip_hostname_check,
    )
    http_client = httpx_client_for(gate)
    base_url = args.url.rstrip("/").removesuffix("/v1") + "/v1"
    # No retries: a refused attestation is not transient, and each retry would reconnect.
    # The SDK accepts a legacy `httpx.Client` at runtime (is_legacy_httpx_sync_client) but
    # annotates `http_client` as `httpx2.Client` only.
    client = openai.OpenAI(
        base_url=base_url,
        api_key=args.api_key,
        http_client=http_client,  # type: ignore[arg-type]
        max_retries=0,
    )
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": args.prompt}]
    try:
        if args.stream:
            for chunk in client.chat.completions.create(
                model=args.model, messages=messages, max_tokens=args.max_tokens, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
            print()
        else:
            completion = client.chat.completions.create(
                model=args.model, messages=messages, max_tokens=args.max_tokens
            )
            print(completion.choices[0].message.content)
    except AttestationRefused as refused:
        print(refused.result.summary(), file=sys.stderr)
        return EXIT_REFUSED
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, AttestationRefused):  # older SDKs wrap it
            print(exc.__cause__.result.summary(), file=sys.stderr)
        else:
            print(
                f"appliance chat: cannot reach {args.url}: {exc.__cause__ or exc}", file=sys.stderr
            )
        return EXIT_REFUSED
    except openai.APIStatusError as exc:
        print(
            f"appliance chat: the appliance answered {exc.status_code}: {exc.message}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    finally:
        http_client.close()
    result = gate.last_result
    if result is not None:
        print(
            f"[attested: {result.tee}, TCB {result.tcb_status}, "
            f"model digest {result.model_digest or 'none'}]",
            file=sys.stderr,
        )
    return EXIT_OK
