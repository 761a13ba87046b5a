"""RA-TLS connect cost on loopback, against a plain TLS connect measured in the same run.

Three client paths to the same server (a simulated TD's RA-TLS identity), interleaved round by
round in a shuffled order so that the shared, noisy machine affects all alike:

* plain:  TCP connect + TLS handshake + close (no certificate checks at all);
* cold:   the same, plus full verification (certificate, DCAP with warm collateral, policy,
          binding), with an empty verdict cache (a new ConnectionGate per connection);
* warm:   the same, through one ConnectionGate whose cached verdict applies.

Also reported, for information: "cold, new DcapVerifier" (no verified-collateral cache either).
Goals: cold <= 10 ms; warm / plain <= 1.2.

Usage: .venv/bin/python bench/ratls_connect.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from attest.collateral_load import collateral_from_bundle_json
from attest.roots import TrustRoot
from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider, simulated_collateral
from attest.verify import DcapVerifier
from ratls.collateral import StaticCollateral
from ratls.connection import ConnectionGate, SocketChannel
from ratls.issuer import IdentityIssuer
from ratls.policy import AppraisalPolicy
from ratls.profile import SubjectNames
from ratls.server import RotatingServerContext
from ratls.tls import client_ssl_context
from ratls.verifier import RatlsVerifier

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def serve(rotating: RotatingServerContext) -> int:
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        try:
            with rotating.context().wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


def connect(port: int, context: ssl.SSLContext, admit: Callable | None) -> None:
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw) as tls:
        if admit is not None:
            admit(tls.getpeercert(binary_form=True), host="127.0.0.1", port=port,
                  channel=SocketChannel(tls))


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ratls-bench-"))
    authority = SimulatedAuthority.create(workdir / "authority", now=NOW)
    provider = SimulatedQuoteProvider(authority)
    issuer = IdentityIssuer(provider, SubjectNames.parse(["127.0.0.1"]), clock=lambda: NOW)
    port = serve(RotatingServerContext(issuer))
    root = TrustRoot(authority.root_der)
    collateral = StaticCollateral(collateral_from_bundle_json(
        simulated_collateral(authority, now=NOW).to_bundle_json()))
    td = provider.td
    policy = AppraisalPolicy.from_document(
        {"mr_td": [td.mr_td.hex()], **{f"rtmr{i}": [td.initial_rtmrs[i].hex()] for i in range(3)}}
    )

    def verifier(dcap: DcapVerifier) -> RatlsVerifier:
        return RatlsVerifier(dcap=dcap, policy=policy, collateral=collateral, clock=lambda: NOW)

    shared = verifier(DcapVerifier(root))
    warm_gate = ConnectionGate(shared, clock=lambda: NOW)
    context = client_ssl_context()
    paths: dict[str, Callable[[], None]] = {
        "plain TLS": lambda: connect(port, context, None),
        "cold (full verification)": lambda: connect(
            port, context, ConnectionGate(shared, clock=lambda: NOW).admit),
        "cold, new DcapVerifier": lambda: connect(
            port, context, ConnectionGate(verifier(DcapVerifier(root)), clock=lambda: NOW).admit),
        "warm (cached verdict)": lambda: connect(port, context, warm_gate.admit),
    }
    for run in paths.values():  # warm-up: imports, first handshakes, the warm cache
        run()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    shuffler = random.Random(0)
    for _ in range(args.rounds):
        shuffler.shuffle(order)  # no path always follows the expensive one
        for name in order:
            samples[name].append(timed(paths[name]))

    medians = {name: statistics.median(values) for name, values in samples.items()}
    plain = medians["plain TLS"]
    print(f"RA-TLS connect on loopback, {args.rounds} interleaved rounds, medians")
    print(f"{'path':<28} {'median ms':>10} {'p90 ms':>8} {'x plain':>8}")
    for name, values in samples.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<28} {medians[name]:>10.3f} {p90:>8.3f} {medians[name] / plain:>8.2f}")
    cold, warm = medians["cold (full verification)"], medians["warm (cached verdict)"]
    print(f"goal cold <= 10 ms: {cold:.3f} ms -> {'met' if cold <= 10 else 'NOT met'}")
    print(f"goal warm <= 1.2 x plain: {warm / plain:.2f} x -> "
          f"{'met' if warm / plain <= 1.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
