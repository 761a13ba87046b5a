"""Benchmark: simulated quote generation and collateral fetching (cold, cached, assembly only).

Run from the project root: `.venv/bin/python bench/providers.py`. Prints medians and ratios
against references measured in the same run, so that numbers compare across machines:
- a simulated quote against the two ECDSA P-256 signatures it needs (QE report, quote);
- a cached / cold collateral fetch against assembling the same responses from memory.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# tests/support: the loopback PCS
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.fake_pcs import FakePcs

from attest.pcs import (
    CollateralCache,
    CollateralFetcher,
    Part,
    PckCa,
    PcsClient,
    PcsEndpoint,
    assemble,
)
from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
NOW = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)


def median_ms(function: Callable[[], object], repeat: int) -> float:
    function()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def report(name: str, value_ms: float, reference_name: str, reference_ms: float) -> None:
    print(f"{name:<44} {value_ms:9.3f} ms   {value_ms / reference_ms:6.2f} x {reference_name}")


def bench_simulated_quote(directory: Path) -> None:
    authority = SimulatedAuthority.create(directory / "authority", now=NOW)
    provider = SimulatedQuoteProvider(authority)
    key = ec.generate_private_key(ec.SECP256R1())

    def two_signatures() -> None:
        key.sign(b"q" * 384, ec.ECDSA(hashes.SHA256()))
        key.sign(b"q" * 632, ec.ECDSA(hashes.SHA256()))

    reference = median_ms(two_signatures, 300)
    print(f"{'reference: two ECDSA P-256 signatures':<44} {reference:9.3f} ms")
    report("simulated get_quote", median_ms(lambda: provider.get_quote(bytes(64)), 300),
           "reference", reference)  # fmt: skip


def bench_collateral(directory: Path) -> None:
    dataset = VECTORS / "tdx" / "collateral" / "tinfoil-verifier" / "2025-12-17"
    with FakePcs(dataset) as pcs:
        client = PcsClient(PcsEndpoint.pccs(pcs.url))
        responses = {
            Part.TCB_INFO: client.tcb_info("90c06f000000"),
            Part.QE_IDENTITY: client.qe_identity(),
            Part.PCK_CRL: client.pck_crl(PckCa.PLATFORM),
            Part.ROOT_CA_CRL: client.root_ca_crl(),
        }
        reference = median_ms(lambda: assemble(responses), 200)
        print(f"{'reference: assemble collateral from memory':<44} {reference:9.3f} ms")

        cache = CollateralCache(directory / "cache")
        warm = CollateralFetcher(client, cache)
        warm.collateral("90c06f000000", PckCa.PLATFORM, now=NOW)
        report("cached fetch (4 files, no network)",
               median_ms(lambda: warm.collateral("90c06f000000", "platform", now=NOW), 200),
               "reference", reference)  # fmt: skip

        counter = iter(range(10**6))

        def cold() -> None:
            fresh = CollateralCache(directory / f"cold-{next(counter)}")
            CollateralFetcher(client, fresh).collateral("90c06f000000", "platform", now=NOW)

        report("cold fetch (4 requests on loopback)", median_ms(cold, 30), "reference", reference)
        client.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        bench_simulated_quote(Path(scratch))
        bench_collateral(Path(scratch))


if __name__ == "__main__":
    main()
