"""Load time through the lifecycle against starting the same engine by hand, in the same run.

    .venv/bin/python bench/load.py                  # real vLLM CPU build, tiny Llama (~2 min)
    .venv/bin/python bench/load.py --model-dir DIR  # another model directory (e.g. SmolLM2)
    .venv/bin/python bench/load.py --fake           # the fake engine (seconds)

Each round starts the engine twice, in alternating order: by hand (spawn the same command,
poll /health every 10 ms) and through `Lifecycle.load` (packed image, userspace verification,
spawn, health wait, ready). The lifecycle's time is split into verify, engine start (spawn) and
health wait (its own `timings`), and its overhead is

    overhead = (load request -> ready) - verify - (engine start to healthy, by hand)

The goal is overhead <= 1 s: everything the lifecycle adds besides verification.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loader.engine.health import probe_health
from loader.engine.kinds import EngineKind, VllmEngine, engine_environment
from loader.engine.process_group import EngineProcess
from loader.images.pack import pack_model
from loader.lifecycle.operations import Lifecycle
from loader.lifecycle.status import ModelState
from loader.settings import HealthSettings, LoaderSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAKE_VLLM = PROJECT_ROOT / "tests" / "support" / "fake_vllm.py"
GOAL_OVERHEAD = 1.0
NAME = "bench"


@dataclass(frozen=True)
class LifecycleRun:
    total: float
    verify: float
    engine_start: float
    health_wait: float


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_by_hand(engine: EngineKind, model_dir: Path, timeout: float) -> float:
    """Seconds from spawning the engine to its first 200 on /health."""
    started = time.perf_counter()
    process = EngineProcess.spawn(
        engine.command(model_dir, NAME), engine_environment(engine, os.environ), tail_lines=50,
    )
    try:
        while not probe_health(engine.port, engine.health_path, 1.0):
            if process.returncode() is not None or time.perf_counter() - started > timeout:
                raise SystemExit("engine did not start by hand:\n" + "\n".join(process.log_tail()))
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        process.stop(grace=30, kill_timeout=10)


def load_through_lifecycle(
    settings: LoaderSettings, engine: EngineKind, timeout: float
) -> LifecycleRun:
    with Lifecycle.create(settings, engine) as lifecycle:
        started = time.perf_counter()
        lifecycle.load(NAME)
        status = lifecycle.wait_for(lambda s: not s.busy, timeout)
        total = time.perf_counter() - started
        if status.state is not ModelState.READY:
            raise SystemExit(f"load failed: {status.error}\n" + "\n".join(status.engine_log_tail))
        timings = dict(status.timings)
        lifecycle.unload()
        lifecycle.wait_for(lambda s: not s.busy, 60)
    return LifecycleRun(total, timings["verify"], timings["engine_start"], timings["health_wait"])


def fake_model(directory: Path, megabytes: int) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "fake"}')
    with open(directory / "model.safetensors", "wb") as weights:
        weights.writelines(os.urandom(1 << 20) for _ in range(megabytes))
    return directory


def tiny_model(vllm_bin: Path) -> Path:
    environment = os.environ | {"APPLIANCE_ENGINE_VENV": str(vllm_bin.parent.parent)}
    built = subprocess.run([str(PROJECT_ROOT / "scripts" / "models.sh"), "tiny"], env=environment,
                           check=True, capture_output=True, text=True)
    return Path(built.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake", action="store_true", help="the fake engine instead of vLLM")
    parser.add_argument("--fake-start-delay", type=float, default=2.0,
                        help="seconds the fake engine takes to listen (default 2)")
    parser.add_argument("--fake-model-mb", type=int, default=64,
                        help="size of the fake model's weights (default 64 MB)")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: tiny Llama)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-load.") as scratch:
        root = Path(scratch)
        if args.fake:
            engine: EngineKind = VllmEngine(
                FAKE_VLLM, free_port(), env={"FAKE_VLLM_START_DELAY": str(args.fake_start_delay),
                                             "PATH": os.environ["PATH"]})
            model_dir = args.model_dir or fake_model(root / "model", args.fake_model_mb)
            label = f"fake engine (start delay {args.fake_start_delay:g} s)"
        else:
            venv = Path(os.environ.get("APPLIANCE_ENGINE_VENV", PROJECT_ROOT / ".engine-venv"))
            vllm_bin = venv / "bin" / "vllm"
            if not vllm_bin.is_file():
                raise SystemExit(f"no vLLM at {vllm_bin}: run scripts/engine.sh, or use --fake")
            engine = VllmEngine.cpu_development(vllm_bin, port=free_port(),
                                                extra_args=("--max-model-len", "512"))
            model_dir = args.model_dir or tiny_model(vllm_bin)
            label = "vLLM CPU build"
        settings = LoaderSettings(
            root / "models", root / "roothash", root / "work", root / "state",
            health=HealthSettings(startup_timeout=args.timeout),
        )
        packed = pack_model(model_dir, NAME, settings.models_dir, settings.roothash_dir)
        image_mb = packed.image.image_path.stat().st_size / 2**20
        print(f"engine: {label}; model {model_dir} ({image_mb:.1f} MB image)")

        by_hand: list[float] = []
        runs: list[LifecycleRun] = []
        for round_number in range(1, args.rounds + 1):
            # Alternate which goes first, so that warm caches favour neither.
            if round_number % 2:
                by_hand.append(start_by_hand(engine, model_dir, args.timeout))
                runs.append(load_through_lifecycle(settings, engine, args.timeout))
            else:
                runs.append(load_through_lifecycle(settings, engine, args.timeout))
                by_hand.append(start_by_hand(engine, model_dir, args.timeout))
            run = runs[-1]
            print(f"round {round_number}: by hand {by_hand[-1]:.3f} s "
                  f"| lifecycle {run.total:.3f} s "
                  f"= verify {run.verify:.3f} + engine start {run.engine_start:.3f} "
                  f"+ health wait {run.health_wait:.3f} + rest "
                  f"{run.total - run.verify - run.engine_start - run.health_wait:.3f}")

    hand = statistics.median(by_hand)
    total = statistics.median(run.total for run in runs)
    verify = statistics.median(run.verify for run in runs)
    engine_time = statistics.median(run.engine_start + run.health_wait for run in runs)
    overhead = total - verify - hand
    paired = statistics.median(
        run.total - run.verify - hand_time for run, hand_time in zip(runs, by_hand, strict=True))
    bookkeeping = statistics.median(
        run.total - run.verify - run.engine_start - run.health_wait for run in runs)
    print(f"median: load request -> ready {total:.3f} s; verify {verify:.3f} s; "
          f"engine start to healthy {engine_time:.3f} s through the lifecycle vs {hand:.3f} s "
          f"by hand (ratio {engine_time / hand:.3f})")
    print(f"paired per round: median overhead {paired:+.3f} s; lifecycle time outside its steps "
          f"{bookkeeping * 1000:.1f} ms")
    verdict = "meets" if overhead <= GOAL_OVERHEAD else "MISSES"
    print(f"overhead beyond verify + engine start: {overhead:+.3f} s ({verdict} the goal "
          f"of <= {GOAL_OVERHEAD:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
