"""Benchmark: DCAP verification of the real vector pairs, ours vs dcap-qvl, in the same run.

For each (quote, bundle) pair that both verifiers accept, time `DcapVerifier.verify(raw, ...)`
(one verifier instance, collateral parsed once and warm) and `dcap_qvl.verify(raw, ...)`
(collateral parsed once), interleaved round by round with alternating order, since the machine
is shared and noisy. Prints the median time of each per pair, their ratio, and the median ratio
over all pairs. Goal: ratio <= 1.0.

    .venv/bin/python bench/verify_quote.py [--rounds 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl

from attest.collateral_load import collateral_from_bundle_json
from attest.errors import AttestError
from attest.verify import DcapVerifier

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def load_pairs(verifier: DcapVerifier) -> list[dict]:
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    pairs = []
    for row in manifest["verification"]:
        if "skipped" in row or "status" not in row["dcap_qvl"]:
            continue
        bundle_text = (VECTORS / "tdx" / "assembled" / f"{row['bundle']}.json").read_text()
        pair = {
            "name": f"{row['quote'].removesuffix('.bin')} @ {row['bundle']}",
            "raw": (VECTORS / manifest["quotes"][row["quote"]]["file"]).read_bytes(),
            "ours": collateral_from_bundle_json(bundle_text),
            "theirs": dcap_qvl.QuoteCollateralV3.from_json(bundle_text),
            "now": row["now_unix"],
            "at": datetime.fromtimestamp(row["now_unix"], UTC),
        }
        try:
            verifier.verify(pair["raw"], pair["ours"], now=pair["at"])  # warms the caches too
        except AttestError:
            continue  # e.g. non-zero trailing data: not a pair both verifiers accept
        dcap_qvl.verify(pair["raw"], pair["theirs"], pair["now"])
        pairs.append(pair)
    return pairs


def measure(pairs: list[dict], verifier: DcapVerifier, rounds: int) -> list[dict]:
    ours: dict[str, list[float]] = {p["name"]: [] for p in pairs}
    theirs: dict[str, list[float]] = {p["name"]: [] for p in pairs}
    clock = time.perf_counter

    def run_ours(pair: dict) -> None:
        start = clock()
        verifier.verify(pair["raw"], pair["ours"], now=pair["at"])
        ours[pair["name"]].append(clock() - start)

    def run_theirs(pair: dict) -> None:
        start = clock()
        dcap_qvl.verify(pair["raw"], pair["theirs"], pair["now"])
        theirs[pair["name"]].append(clock() - start)

    for round_number in range(rounds):
        order = (run_ours, run_theirs) if round_number % 2 else (run_theirs, run_ours)
        for pair in pairs:
            for run in order:
                run(pair)
    results = []
    for pair in pairs:
        name = pair["name"]
        ours_ms = statistics.median(ours[name]) * 1e3
        theirs_ms = statistics.median(theirs[name]) * 1e3
        results.append(
            {
                "pair": name,
                "ours_ms": ours_ms,
                "dcap_qvl_ms": theirs_ms,
                "ratio": ours_ms / theirs_ms,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    verifier = DcapVerifier()
    pairs = load_pairs(verifier)
    results = measure(pairs, verifier, args.rounds)
    overall = statistics.median(r["ratio"] for r in results)
    if args.json:
        print(json.dumps({"rounds": args.rounds, "pairs": results, "median_ratio": overall}))
        return 0
    width = max(len(r["pair"]) for r in results)
    print(f"{'pair'.ljust(width)}  ours ms  dcap-qvl ms  ratio")
    for r in results:
        times = f"{r['ours_ms']:7.3f}  {r['dcap_qvl_ms']:11.3f}  {r['ratio']:5.2f}"
        print(f"{r['pair'].ljust(width)}  {times}")
    print(
        f"{len(results)} pairs, {args.rounds} rounds, median ratio (ours / dcap-qvl): {overall:.2f}"
        f" (goal <= 1.00)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
