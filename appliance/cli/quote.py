"""`appliance quote show|verify`: inspect TDX quotes and verify them against collateral.

Exit status of `verify`: 0 when every quote verified and passed the policy, 1 when any was
rejected, 2 on usage errors (bad arguments, unreadable or malformed --collateral, --root,
--policy or quote files, a bad --at).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from attest.collateral import Collateral
from attest.collateral_load import collateral_from_bundle_json
from attest.errors import AttestError, FormatError, PolicyError
from attest.pck import pck_extension_of
from attest.policy import Policy, load_policy, validate
from attest.quote import Quote, parse_quote
from attest.roots import TrustRoot
from attest.verify import DcapVerifier

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """An input the command cannot even start with: reported on stderr, exit status 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quote", help="inspect and verify TDX quotes")
    commands = parser.add_subparsers(dest="quote_command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="print the fields of a quote")
    show.add_argument("quote", type=Path, metavar="QUOTE", help="raw quote file")
    show.add_argument("--json", action="store_true", help="print JSON")
    _add_trailing_data_flag(show)
    show.set_defaults(func=run_show)

    verify = commands.add_parser(
        "verify",
        help="DCAP-verify quotes against collateral, then apply a policy",
        description="Verify each quote (DCAP) and apply the policy; one result line per quote.",
    )
    verify.add_argument("quotes", type=Path, nargs="+", metavar="QUOTE", help="raw quote files")
    verify.add_argument(
        "--collateral",
        type=Path,
        required=True,
        metavar="BUNDLE",
        help="collateral bundle (dcap-qvl QuoteCollateralV3 JSON)",
    )
    verify.add_argument(
        "--at",
        metavar="ISO8601",
        help="verification time (default: now); a time without zone is UTC",
    )
    verify.add_argument(
        "--root",
        type=Path,
        metavar="PEM",
        help="trust root instead of Intel's SGX Root CA (results say simulated)",
    )
    verify.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy (.toml or .json); default: no debug, SEPT_VE_DISABLE set, "
        "UpToDate only, no measurement pinned",
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_trailing_data_flag(verify)
    verify.set_defaults(func=run_verify)


def _add_trailing_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unsafe-allow-trailing-data",
        action="store_true",
        help="accept non-zero bytes after the signature data (unsigned)",
    )


def run_show(args: argparse.Namespace) -> int:
    try:
        raw = _read(args.quote, "quote")
    except UsageError as exc:
        return _usage(exc)
    try:
        quote = parse_quote(raw, unsafe_allow_trailing_data=args.unsafe_allow_trailing_data)
    except FormatError as exc:
        _emit(
            {"quote": str(args.quote), "error": exc.to_dict()},
            args.json,
            f"{args.quote}: not a valid quote: {exc}",
        )
        return EXIT_REJECTED
    fields = describe_quote(quote)
    if args.json:
        print(json.dumps({"quote": str(args.quote), **fields}))
    else:
        print(f"{args.quote}")
        _print_tree(fields, indent="  ")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    try:
        now = _parse_time(args.at) if args.at else datetime.now(UTC)
        collateral = _load_collateral(args.collateral)
        root = _load_root(args.root) if args.root else None
        policy = _load_policy(args.policy) if args.policy else Policy()
        quotes = [(path, _read(path, "quote")) for path in args.quotes]
        verifier = DcapVerifier(root)
    except UsageError as exc:
        return _usage(exc)
    rejected = 0
    for path, raw in quotes:
        line = verify_one(
            verifier,
            raw,
            collateral,
            policy,
            now,
            unsafe_allow_trailing_data=args.unsafe_allow_trailing_data,
        )
        line = {"quote": str(path), **line}
        rejected += not line["verified"]
        _emit(line, args.json, _summary(line))
    return EXIT_REJECTED if rejected else EXIT_OK


def verify_one(
    verifier: DcapVerifier,
    raw: bytes,
    collateral: Collateral,
    policy: Policy,
    now: datetime,
    *,
    unsafe_allow_trailing_data: bool = False,
) -> dict[str, Any]:
    """Parse, verify and validate one quote; the result line (never raises for bad evidence)."""
    line: dict[str, Any] = {
        "verified": False,
        "tcb_status": None,
        "advisory_ids": [],
        "mr_td": None,
        "rtmr": None,
        "report_data": None,
        "debug": None,
        "simulated": verifier.simulated,
        "verified_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        quote = parse_quote(raw, unsafe_allow_trailing_data=unsafe_allow_trailing_data)
        # Fields of a quote that may still be rejected: shown for diagnosis, never as a verdict.
        line.update(
            mr_td=quote.body.mr_td.hex(),
            rtmr=[r.hex() for r in quote.body.rtmr],
            report_data=quote.body.report_data.hex(),
            debug=quote.body.debug,
        )
        result = verifier.verify(quote, collateral, now=now)
        line.update(result.to_dict())
        outcome = validate(result, policy)
        line["policy"] = [check.to_dict() for check in outcome.checks]
        line["verified"] = True
    except AttestError as exc:
        line["error"] = exc.to_dict()
        if isinstance(exc, PolicyError) and exc.checks:
            line["policy"] = [check.to_dict() for check in exc.checks]
        log.debug("quote rejected: %s", exc)
    return line


def describe_quote(quote: Quote) -> dict[str, Any]:
    """The fields of a parsed (not verified) quote, hex-encoded."""
    header, body = quote.header, quote.body
    qe = quote.certification_data.qe_report
    fields: dict[str, Any] = {
        "header": {
            "version": header.version,
            "att_key_type": header.att_key_type,
            "tee_type": f"{header.tee_type:#x}",
            "qe_vendor_id": header.qe_vendor_id.hex(),
            "user_data": header.user_data.hex(),
        },
        "body_type": quote.body_type,
        "td_report": {
            **{
                name: getattr(body, name).hex()
                for name in (
                    "tee_tcb_svn",
                    "mr_seam",
                    "mr_signer_seam",
                    "seam_attributes",
                    "td_attributes",
                    "xfam",
                    "mr_td",
                    "mr_config_id",
                    "mr_owner",
                    "mr_owner_config",
                )
            },
            "rtmr": [r.hex() for r in body.rtmr],
            "report_data": body.report_data.hex(),
            "debug": body.debug,
            "sept_ve_disable": body.sept_ve_disable,
        },
        "qe_report": {
            "mr_enclave": qe.mr_enclave.hex(),
            "mr_signer": qe.mr_signer.hex(),
            "isv_prod_id": qe.isv_prod_id,
            "isv_svn": qe.isv_svn,
        },
        "attestation_key": quote.attestation_key.hex(),
        "qe_auth_data": quote.certification_data.qe_auth_data.hex(),
        "padding_bytes": len(quote.padding),
    }
    # TD report 1.5 (`body.is_td15`): the body validates that both fields are set or both absent.
    if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
        fields["td_report"]["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        fields["td_report"]["mr_service_td"] = body.mr_service_td.hex()
    fields["pck_chain"] = [_describe_certificate(der) for der in quote.pck_cert_chain]
    return fields


def _describe_certificate(der: bytes) -> dict[str, Any]:
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": f"malformed certificate: {exc}"}
    out: dict[str, Any] = {
        "subject": certificate.subject.rfc4514_string(),
        "not_before": certificate.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        pck = pck_extension_of(certificate)
    except FormatError:
        return out  # CA certificates have no SGX extension
    out.update(
        fmspc=pck.fmspc.hex(),
        pce_id=pck.pce_id.hex(),
        sgx_type=pck.sgx_type.name,
        sgx_tcb_components=list(pck.tcb.sgx_tcb_components),
        pce_svn=pck.tcb.pce_svn,
    )
    return out


# --- inputs -------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: not an ISO 8601 time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _load_collateral(path: Path) -> Collateral:
    try:
        return collateral_from_bundle_json(_read(path, "collateral"))
    except AttestError as exc:
        raise UsageError(f"--collateral {path}: {exc}") from None


def _load_root(path: Path) -> TrustRoot:
    try:
        return TrustRoot.from_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read root {path}: {exc.strerror}") from None
    except AttestError as exc:
        raise UsageError(f"--root {path}: {exc}") from None


def _load_policy(path: Path) -> Policy:
    try:
        return load_policy(path)
    except AttestError as exc:
        raise UsageError(f"--policy: {exc}") from None


# --- output -------------------------------------------------------------------------------------


def _usage(exc: UsageError) -> int:
    print(f"appliance quote: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _emit(line: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(line) if as_json else text)


def _summary(line: dict[str, Any]) -> str:
    simulated = " [SIMULATED ROOT]" if line["simulated"] else ""
    if line["verified"]:
        advisories = f" advisories={','.join(line['advisory_ids'])}" if line["advisory_ids"] else ""
        return (
            f"OK    {line['quote']}: {line['tcb_status']}{advisories} "
            f"mr_td={line['mr_td'][:16]}...{simulated}"
        )
    error = line["error"]
    return f"FAIL  {line['quote']}: {error['stage']}/{error['type']}: {error['message']}{simulated}"


def _print_tree(value: Any, indent: str) -> None:
    for key, item in value.items():
        if isinstance(item, dict):
            print(f"{indent}{key}:")
            _print_tree(item, indent + "  ")
        elif isinstance(item, list):
            print(f"{indent}{key}:")
            for index, entry in enumerate(item):
                if isinstance(entry, dict):
                    print(f"{indent}  [{index}]")
                    _print_tree(entry, indent + "    ")
                else:
                    print(f"{indent}  [{index}] {entry}")
        else:
            print(f"{indent}{key}: {item}")
