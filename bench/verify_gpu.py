"""Benchmark: verifying one NVIDIA GPU report, against references measured in the same run.

For each real report (tests/vectors/nvidia) with its own chain, times
- cold: `verify_gpu_evidence(...)`, a fresh verifier each call: parse, the whole device chain
  (four certificate signatures, P-384), the report signature;
- warm: `GpuVerifier.verify(...)` on one verifier whose cached chain verdict is reused: parse,
  validity of the chain at the time, FWID, the report signature;
- ecdsa: one plain ECDSA P-384/SHA-384 verification of the same signature over the same bytes
  (`cryptography`), the floor under any GPU report verification;
- tdx: `DcapVerifier.verify(...)` of the first TDX quote and collateral pair of the vectors'
  MANIFEST (warm, as `bench/verify_quote.py` runs it), what the appliance already pays per
  attestation.
Rounds interleave the four, rotating their order, since the machine is shared and noisy. Prints
the median of each and the ratios cold/ecdsa, warm/ecdsa, warm/tdx.

    .venv/bin/python bench/verify_gpu.py [--rounds 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attest.collateral import Collateral
from attest.collateral_load import collateral_from_bundle_json
from attest.errors import AttestError
from attest.nvidia.chain import nvidia_device_identity_ca
from attest.nvidia.report import parse_gpu_report, report_from_hex
from attest.nvidia.verify import GpuVerifier, verify_gpu_evidence
from attest.verify import DcapVerifier

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside every device certificate's validity


def gpu_cases() -> list[dict]:
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    cases = []
    for row in manifest["nvidia_reports"]:
        raw = report_from_hex((VECTORS / row["report"]).read_text())
        chain = (VECTORS / row["chain"]).read_bytes()
        report = parse_gpu_report(raw)
        key = x509.load_pem_x509_certificates(chain)[0].public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        cases.append(
            {
                "name": Path(row["report"]).stem,
                "raw": raw,
                "chain": chain,
                "nonce": report.nonce,
                "signed": report.signed_bytes,
                "signature": encode_dss_signature(
                    int.from_bytes(report.signature[:48], "big"),
                    int.from_bytes(report.signature[48:], "big"),
                ),
                "key": key,
            }
        )
    return cases


def tdx_reference() -> Callable[[], object]:
    """The first quote/collateral pair of the MANIFEST that our DCAP verifier accepts."""
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    verifier = DcapVerifier()
    for row in manifest["verification"]:
        if "skipped" in row or "status" not in row["dcap_qvl"]:
            continue
        raw = (VECTORS / manifest["quotes"][row["quote"]]["file"]).read_bytes()
        bundle = (VECTORS / "tdx" / "assembled" / f"{row['bundle']}.json").read_text()
        collateral = collateral_from_bundle_json(bundle)
        now = datetime.fromtimestamp(row["now_unix"], UTC)
        try:
            verifier.verify(raw, collateral, now=now)
        except AttestError:
            continue

        def run(
            raw: bytes = raw, collateral: Collateral = collateral, now: datetime = now
        ) -> object:
            return verifier.verify(raw, collateral, now=now)

        return run
    raise SystemExit("no TDX pair verifies: cannot measure the reference")


def measure(case: dict, tdx: Callable[[], object], rounds: int) -> dict[str, float]:
    root = nvidia_device_identity_ca()
    warm_verifier = GpuVerifier(root)
    warm_verifier.verify(case["raw"], case["chain"], nonce=case["nonce"], now=NOW)
    ecdsa = ec.ECDSA(hashes.SHA384())
    runs: dict[str, Callable[[], object]] = {
        "cold": lambda: verify_gpu_evidence(
            case["raw"], case["chain"], root=root, nonce=case["nonce"], now=NOW
        ),
        "warm": lambda: warm_verifier.verify(
            case["raw"], case["chain"], nonce=case["nonce"], now=NOW
        ),
        "ecdsa": lambda: case["key"].verify(case["signature"], case["signed"], ecdsa),
        "tdx": tdx,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    clock = time.perf_counter
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            runs[name]()
            times[name].append(clock() - start)
    medians = {f"{name}_ms": statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        **medians,
        "cold_over_ecdsa": medians["cold_ms"] / medians["ecdsa_ms"],
        "warm_over_ecdsa": medians["warm_ms"] / medians["ecdsa_ms"],
        "warm_over_tdx": medians["warm_ms"] / medians["tdx_ms"],
        "cold_over_tdx": medians["cold_ms"] / medians["tdx_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tdx = tdx_reference()
    results = {case["name"]: measure(case, tdx, args.rounds) for case in gpu_cases()}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "reports": results}))
        return 0
    width = max(len(name) for name in results)
    print(
        f"{'report'.ljust(width)}  cold ms  warm ms  ecdsa ms  tdx ms"
        "  cold/ecdsa  warm/ecdsa  warm/tdx  cold/tdx"
    )
    for name, r in results.items():
        print(
            f"{name.ljust(width)}  {r['cold_ms']:7.3f}  {r['warm_ms']:7.3f}  {r['ecdsa_ms']:8.3f}"
            f"  {r['tdx_ms']:6.3f}  {r['cold_over_ecdsa']:10.2f}  {r['warm_over_ecdsa']:10.2f}"
            f"  {r['warm_over_tdx']:8.2f}  {r['cold_over_tdx']:8.2f}"
        )
    print(f"{args.rounds} rounds each, medians; ratios > 1 mean slower than the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
