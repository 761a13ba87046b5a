"""`appliance verity format|verify|dump`: veritysetup's file commands, on our implementation.

Same arguments, defaults (sha256, 4 KiB blocks, random 32-byte salt, format 1, superblock) and
header output as veritysetup 2.6. Exit status of `verify`: 0 valid; 1 wrong root hash, bad or
mismatching parameters, unreadable files; 2 corrupted data or hash tree (the offset is named).
"""

from __future__ import annotations

import argparse
import os
import sys
from uuid import UUID, uuid4

from appliance.cli.progress import ProgressBar
from loader.errors import (
    DataCorruptionError,
    HashTreeCorruptionError,
    LoaderError,
    ParameterMismatchError,
)
from loader.verity import VerityParams, format_hash, parse_superblock, verify
from loader.verity.params import SUPERBLOCK_SIZE

EXIT_OK = 0
EXIT_INVALID = 1  # wrong root hash, bad parameters, unreadable input
EXIT_CORRUPT = 2  # corrupted data or hash tree
DEFAULT_SALT_SIZE = 32
PROGRESS_MIN_SIZE = 64 << 20  # show progress only where it takes long enough to matter

_DEFAULT_HASH = "sha256"
_INT_DEFAULTS = {
    "data_block_size": 4096,
    "hash_block_size": 4096,
    "format": 1,
    "hash_offset": 0,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    verity = subparsers.add_parser(
        "verity", help="dm-verity hash trees (veritysetup format/verify/dump on files)"
    )
    commands = verity.add_subparsers(dest="verity_command", required=True, metavar="ACTION")

    fmt = commands.add_parser("format", help="build the hash tree of DATA into HASH")
    fmt.add_argument("data", metavar="DATA")
    fmt.add_argument("hash_device", metavar="HASH")
    _add_parameter_options(fmt)
    fmt.add_argument("--uuid", help="UUID for the superblock (default: random)")
    fmt.set_defaults(func=run_format)

    check = commands.add_parser("verify", help="verify DATA against HASH and ROOT")
    check.add_argument("data", metavar="DATA")
    check.add_argument("hash_device", metavar="HASH")
    check.add_argument("root_hash", metavar="ROOT")
    _add_parameter_options(check)
    check.set_defaults(func=run_verify)

    dump = commands.add_parser("dump", help="show the superblock of HASH")
    dump.add_argument("hash_device", metavar="HASH")
    dump.add_argument("--hash-offset", type=_non_negative, default=0, metavar="BYTES")
    dump.set_defaults(func=run_dump)


def _add_parameter_options(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that `verify` can tell an explicit option (compared with the superblock)
    # from an omitted one (taken from it).
    parser.add_argument("--hash", metavar="ALG", help="hash algorithm (default sha256)")
    parser.add_argument("--data-block-size", type=_non_negative, metavar="BYTES")
    parser.add_argument("--hash-block-size", type=_non_negative, metavar="BYTES")
    parser.add_argument("--salt", metavar="HEX|-", help="salt in hex, '-' for none")
    parser.add_argument("--format", type=int, choices=(0, 1), help="1 normal, 0 Chrome OS")
    parser.add_argument("--no-superblock", action="store_true", help="no on-disk superblock")
    parser.add_argument("--hash-offset", type=_non_negative, metavar="BYTES")
    parser.add_argument("--data-blocks", type=_non_negative, metavar="BLOCKS")


def run_format(args: argparse.Namespace) -> int:
    progress = None
    try:
        data_size = os.stat(args.data).st_size
        block_size = _option(args, "data_block_size")
        data_blocks = args.data_blocks or data_size // block_size
        superblock = not args.no_superblock
        params = VerityParams(
            data_blocks=data_blocks,
            hash_algorithm=_hash_option(args),
            hash_format=_option(args, "format"),
            data_block_size=block_size,
            hash_block_size=_option(args, "hash_block_size"),
            salt=os.urandom(DEFAULT_SALT_SIZE) if args.salt is None else _parse_salt(args.salt),
            hash_offset=_option(args, "hash_offset"),
            superblock=superblock,
            uuid=(UUID(args.uuid) if args.uuid else uuid4()) if superblock else None,
        )
        progress = _progress("format", params.data_size)
        tree = format_hash(args.data, args.hash_device, params, progress=progress)
    except (LoaderError, OSError, ValueError) as error:
        return _fail(error, EXIT_INVALID, progress)
    if progress is not None:
        progress.finish()
    print(header(args.hash_device, params, tree.root_hash))
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    progress = None
    try:
        params = _verify_params(args)
        try:
            root_hash = bytes.fromhex(args.root_hash)
        except ValueError:
            raise ValueError("invalid root hash string specified") from None
        progress = _progress("verify", params.data_size)
        verify(args.data, args.hash_device, params, root_hash, progress=progress)
    except (DataCorruptionError, HashTreeCorruptionError) as error:
        return _fail(error, EXIT_CORRUPT, progress)
    except (LoaderError, OSError, ValueError) as error:
        return _fail(error, EXIT_INVALID, progress)
    if progress is not None:
        progress.finish()
    print(f"Verification succeeded: {params.data_blocks} data blocks, root hash {args.root_hash}")
    return EXIT_OK


def run_dump(args: argparse.Namespace) -> int:
    try:
        params = _read_superblock_params(args.hash_device, args.hash_offset)
    except (LoaderError, OSError) as error:
        return _fail(error, EXIT_INVALID)
    print(header(args.hash_device, params))
    return EXIT_OK


def header(hash_path: str, params: VerityParams, root_hash: bytes | None = None) -> str:
    """veritysetup's `VERITY header information` block, label for label."""
    geometry = params.geometry
    lines = [
        f"VERITY header information for {hash_path}",
        f"UUID:            \t{params.uuid or ''}",
        f"Hash type:       \t{params.hash_format}",
        f"Data blocks:     \t{params.data_blocks}",
        f"Data block size: \t{params.data_block_size}",
        f"Hash blocks:     \t{geometry.tree_blocks}",
        f"Hash block size: \t{params.hash_block_size}",
        f"Hash algorithm:  \t{params.hash_algorithm}",
        f"Salt:            \t{params.salt.hex() or '-'}",
    ]
    if root_hash is not None:
        lines.append(f"Root hash:      \t{root_hash.hex()}")
    if params.hash_offset == 0:
        lines.append(f"Hash device size: \t{geometry.tree_end} [bytes]")
    return "\n".join(lines)


def _verify_params(args: argparse.Namespace) -> VerityParams:
    if args.no_superblock:
        block_size = _option(args, "data_block_size")
        return VerityParams(
            data_blocks=args.data_blocks or os.stat(args.data).st_size // block_size,
            hash_algorithm=_hash_option(args),
            hash_format=_option(args, "format"),
            data_block_size=block_size,
            hash_block_size=_option(args, "hash_block_size"),
            salt=_parse_salt(args.salt) if args.salt is not None else b"",
            hash_offset=_option(args, "hash_offset"),
            superblock=False,
        )
    # With a superblock, parameters come from it; an explicit option must agree with it.
    params = _read_superblock_params(args.hash_device, _option(args, "hash_offset"))
    explicit = {
        "hash_algorithm": args.hash,
        "data_block_size": args.data_block_size,
        "hash_block_size": args.hash_block_size,
        "hash_format": args.format,
        "data_blocks": args.data_blocks,
        "salt": _parse_salt(args.salt) if args.salt is not None else None,
    }
    for field, value in explicit.items():
        if value is not None and value != getattr(params, field):
            raise ParameterMismatchError(
                f"--{field.replace('_', '-')} disagrees with the superblock",
                check=field,
                expected=value,
                actual=getattr(params, field),
            )
    return params


def _read_superblock_params(hash_path: str, hash_offset: int) -> VerityParams:
    with open(hash_path, "rb") as hash_file:
        hash_file.seek(hash_offset)
        raw = hash_file.read(SUPERBLOCK_SIZE)
    return parse_superblock(raw).to_params(hash_offset)


def _option(args: argparse.Namespace, name: str) -> int:
    # argparse stores these with type=int (or None when omitted).
    value: int | None = getattr(args, name)
    return _INT_DEFAULTS[name] if value is None else value


def _hash_option(args: argparse.Namespace) -> str:
    value: str | None = args.hash
    return _DEFAULT_HASH if value is None else value


def _parse_salt(text: str) -> bytes:
    if text == "-":
        return b""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("salt must be hex, or '-' for none") from None


def _progress(label: str, size: int) -> ProgressBar | None:
    return ProgressBar(label) if size >= PROGRESS_MIN_SIZE else None


def _fail(error: Exception, status: int, progress: ProgressBar | None = None) -> int:
    if progress is not None:
        progress.finish()
    kind = type(error).__name__
    print(f"verity: {kind}: {error}", file=sys.stderr)
    return status


def _non_negative(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
