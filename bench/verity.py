"""Benchmark: our dm-verity verification against `veritysetup verify`, in the same run.

    .venv/bin/python bench/verity.py [--size-mib 1024] [--rounds 5] [--workers 2]

Builds a random image (1 GiB by default) and its hash tree, warms the page cache, then runs
rounds that interleave veritysetup verify, our verify with worker processes, and our verify in
one process. Prints medians and best rounds as MiB/s and as ratios against veritysetup (> 1:
faster). Goal: median ratio >= 1.2 on two cores. The cores are shared with other work, so the
load average is printed too; a busy second core removes most of the two-process gain.
Also times `format` (tree building) against `veritysetup format` once per round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loader.verity import VerityParams, format_hash, verify

CHUNK = 64 << 20


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = os.urandom(min(CHUNK, size - written))
            out.write(piece)
            written += len(piece)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(CHUNK):
            pass


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_quietly(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:2]} failed: {done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the image (default: a temp dir)"
    )
    args = parser.parse_args()

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        data, ours_hash, ref_hash = (
            Path(directory, n) for n in ("data.img", "ours.verity", "ref.verity")
        )
        make_image(data, size)
        params = VerityParams(
            data_blocks=size // 4096,
            salt=os.urandom(32),
            uuid=UUID(bytes=os.urandom(16), version=4),
        )
        options = ["--salt", params.salt.hex(), "--uuid", str(params.uuid)]
        root = format_hash(data, ours_hash, params).root_hash
        warm(data)

        samples: dict[str, list[float]] = {
            "veritysetup verify": [],
            f"ours verify ({args.workers} processes)": [],
            "ours verify (1 process)": [],
            "veritysetup format": [],
            f"ours format ({args.workers} processes)": [],
        }
        names = list(samples)
        loads = [os.getloadavg()[0]]
        for round_number in range(args.rounds):
            samples[names[0]].append(
                timed(
                    lambda: run_quietly(
                        ["veritysetup", "verify", str(data), str(ours_hash), root.hex()]
                    )
                )
            )
            samples[names[1]].append(
                timed(lambda: verify(data, ours_hash, params, root, workers=args.workers))
            )
            samples[names[2]].append(
                timed(lambda: verify(data, ours_hash, params, root, workers=1))
            )
            samples[names[3]].append(
                timed(
                    lambda: run_quietly(
                        ["veritysetup", "format", str(data), str(ref_hash), *options]
                    )
                )
            )
            samples[names[4]].append(
                timed(lambda: format_hash(data, ours_hash, params, workers=args.workers))
            )
            loads.append(os.getloadavg()[0])
            print(
                f"round {round_number + 1}: "
                + ", ".join(f"{name} {samples[name][-1]:.2f}s" for name in names),
                flush=True,
            )
        if ref_hash.read_bytes() != ours_hash.read_bytes():
            raise SystemExit("hash files differ from veritysetup's")

    mib = size / (1 << 20)
    print(
        f"\n{args.size_mib} MiB, sha256, 4 KiB blocks, {args.rounds} interleaved rounds, "
        f"{os.cpu_count()} CPUs, 1-min load average {min(loads):.2f}..{max(loads):.2f}"
    )
    print(f"{'':34} {'median':>12} {'best':>12} {'ratio (median)':>16} {'ratio (best)':>14}")
    for name in names:
        reference = samples["veritysetup verify" if "verify" in name else "veritysetup format"]
        median, best = statistics.median(samples[name]), min(samples[name])
        print(
            f"{name:34} {mib / median:8.0f} MiB/s {mib / best:6.0f} MiB/s"
            f" {statistics.median(reference) / median:15.2f}x {min(reference) / best:13.2f}x"
        )
    print(
        "ratio = veritysetup time / our time; > 1 means we are faster. Goal: verify ratio >= 1.2."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
