"""`appliance model pack|verify`: build verified model images, and check them offline.

pack SRC_DIR --name NAME --models-dir DIR --roothash-dir DIR [--fs squashfs|erofs]
    writes DIR/NAME.img, DIR/NAME.verity and ROOTHASH_DIR/NAME.roothash (loader.images.model_image)
verify NAME --models-dir DIR --roothash-dir DIR
    checks the image against its trusted record; exit 0 valid, 1 refused, 2 corrupted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.progress import ProgressBar
from loader.errors import DataCorruptionError, HashTreeCorruptionError, LoaderError
from loader.images.fsimage import FILESYSTEMS
from loader.images.model_image import load_record, resolve_model_image, verify_model_image
from loader.images.pack import pack_model

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CORRUPT = 2


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
        packed = pack_model(
            args.source,
            args.name,
            args.models_dir,
            args.roothash_dir,
            filesystem=args.filesystem,
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
    print(f"record:   {packed.record_path}")
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
