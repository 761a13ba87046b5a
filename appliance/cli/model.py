"""`appliance model pack|verify`: build verified model images, and check them offline.

pack SRC_DIR --name NAME --models-dir DIR --roothash-dir DIR [--fs squashfs|erofs]
          [--max-model-len N] [--runner generate|pooling] [--dtype D] [--engine-arg=--FLAG[=V] ...]
    writes DIR/NAME.img, DIR/NAME.verity and ROOTHASH_DIR/NAME.roothash (loader.images.model_image);
    engine settings are pinned in the record (version 2; loader.images.engine_settings). Settings
    the record may not hold exit 2 before anything is built or written.
verify NAME --models-dir DIR --roothash-dir DIR
    checks the image against its trusted record; exit 0 valid, 1 refused, 2 corrupted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.progress import ProgressBar
from loader.errors import DataCorruptionError, HashTreeCorruptionError, LoaderError, RecordError
from loader.images.engine_settings import DTYPES, RUNNERS, ModelEngineSettings
from loader.images.fsimage import FILESYSTEMS
from loader.images.model_image import load_record, resolve_model_image, verify_model_image
from loader.images.pack import pack_model

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CORRUPT = 2
EXIT_USAGE = 2  # pack: the command line asks for what a record may not hold, as argparse's 2


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model images: pack and verify")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    pack = commands.add_parser("pack", help="build image, hash tree and trusted record")
    pack.add_argument("source", metavar="SRC_DIR", type=Path)
    pack.add_argument("--name", required=True)
    pack.add_argument("--models-dir", required=True, type=Path)
    pack.add_argument("--roothash-dir", required=True, type=Path)
    pack.add_argument("--fs", choices=FILESYSTEMS, default="squashfs", dest="filesystem")
    pack.add_argument("--replace", action="store_true", help="overwrite an existing model")
    engine = pack.add_argument_group(
        "engine settings", "pinned in the model's trusted record; vLLM's defaults when not given"
    )
    engine.add_argument("--max-model-len", type=int, metavar="N", help="context length in tokens")
    engine.add_argument("--runner", choices=RUNNERS)
    engine.add_argument("--dtype", choices=DTYPES)
    engine.add_argument(
        "--engine-arg", action="append", default=[], metavar="ARG", dest="engine_args",
        help="an allowed vLLM flag, repeatable; use the = form: --engine-arg=--max-num-seqs=8",
    )
    pack.set_defaults(func=run_pack)

    check = commands.add_parser("verify", help="verify a model image against its record")
    check.add_argument("name", metavar="NAME")
    check.add_argument("--models-dir", required=True, type=Path)
    check.add_argument("--roothash-dir", required=True, type=Path)
    check.set_defaults(func=run_verify)


def run_pack(args: argparse.Namespace) -> int:
    bars: dict[str, ProgressBar] = {}

    def progress(stage: str, fraction: float) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.finish()
            bars.clear()
            bars[stage] = ProgressBar(f"pack {args.name}: {stage}")
        bars[stage](fraction)

    try:
        engine = ModelEngineSettings(
            args.max_model_len, args.runner, args.dtype, tuple(args.engine_args)
        )
    except RecordError as error:
        print(f"model pack: engine settings refused, nothing written: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        packed = pack_model(
            args.source,
            args.name,
            args.models_dir,
            args.roothash_dir,
            filesystem=args.filesystem,
            engine=engine,
            replace=args.replace,
            progress=progress,
        )
    except (LoaderError, OSError) as error:
        print(f"model pack: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        for bar in bars.values():
            bar.finish()
    record = packed.record
    print(f"model:    {record.name} ({record.filesystem}, {record.image_size} bytes)")
    print(f"image:    {packed.image.image_path}")
    print(f"hash:     {packed.image.hash_path}")
    print(f"record:   {packed.record_path} (version {record.version}, "
          f"record digest {record.record_digest})")
    print(f"engine:   {' '.join(record.engine.vllm_args()) or '(vLLM defaults)'}")
    print(f"digest:   {record.digest}")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    bar = ProgressBar(f"verify {args.name}")
    try:
        image = resolve_model_image(args.models_dir, args.name)
        record = load_record(args.roothash_dir, args.name)
        verify_model_image(image, record, progress=bar)
    except (DataCorruptionError, HashTreeCorruptionError) as error:
        bar.finish()
        print(f"model verify: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_CORRUPT
    except (LoaderError, OSError) as error:
        bar.finish()
        print(f"model verify: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INVALID
    bar.finish()
    print(f"{record.name}: verified, digest {record.digest}")
    return EXIT_OK
