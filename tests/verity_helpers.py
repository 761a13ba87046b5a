"""Helpers for the dm-verity tests: deterministic data, the real veritysetup, libcryptsetup.

veritysetup (Debian cryptsetup-bin) and libcryptsetup (via ctypes) are independent references:
`format`, `verify` and `dump` run entirely in userspace, without device-mapper
(docs/verity.md §1, §4).
The root hash is always passed as an argument, never with --root-hash-file (which makes
veritysetup 2.6 succeed when the file is missing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import subprocess
from pathlib import Path

from loader.verity import VerityParams


def write_random(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def veritysetup(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["veritysetup", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def veritysetup_options(params: VerityParams) -> list[str]:
    """Command-line options that make veritysetup use exactly `params`."""
    options = [
        "--hash", params.hash_algorithm,
        "--format", str(params.hash_format),
        "--data-block-size", str(params.data_block_size),
        "--hash-block-size", str(params.hash_block_size),
        "--data-blocks", str(params.data_blocks),
        "--hash-offset", str(params.hash_offset),
        "--salt", params.salt.hex() or "-",
    ]  # fmt: skip
    if params.superblock:
        options += ["--uuid", str(params.uuid)]
    else:
        options.append("--no-superblock")
    return options


def veritysetup_format(data: Path, hash_file: Path, params: VerityParams) -> bytes:
    """Run `veritysetup format`; return the root hash it prints."""
    done = veritysetup("format", data, hash_file, *veritysetup_options(params))
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        if line.startswith("Root hash:"):
            return bytes.fromhex(line.split(":", 1)[1].strip())
    raise AssertionError(f"no root hash in: {done.stdout}")


def veritysetup_verify(data: Path, hash_file: Path, params: VerityParams, root: bytes) -> int:
    return veritysetup(
        "verify", data, hash_file, root.hex(), *veritysetup_options(params)
    ).returncode


class _CryptParamsVerity(ctypes.Structure):
    # struct crypt_params_verity from libcryptsetup.h (2.x)
    _fields_ = [
        ("hash_name", ctypes.c_char_p),
        ("data_device", ctypes.c_char_p),
        ("hash_device", ctypes.c_char_p),
        ("fec_device", ctypes.c_char_p),
        ("salt", ctypes.c_char_p),
        ("salt_size", ctypes.c_uint32),
        ("hash_type", ctypes.c_uint32),
        ("data_block_size", ctypes.c_uint32),
        ("hash_block_size", ctypes.c_uint32),
        ("data_size", ctypes.c_uint64),
        ("hash_area_offset", ctypes.c_uint64),
        ("fec_area_offset", ctypes.c_uint64),
        ("fec_roots", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


CRYPT_VERITY_NO_HEADER = 1 << 0
CRYPT_VERITY_CHECK_HASH = 1 << 1


def libcryptsetup() -> ctypes.CDLL:
    name = ctypes.util.find_library("cryptsetup") or "libcryptsetup.so.12"
    lib = ctypes.CDLL(name)
    lib.crypt_init_data_device.argtypes = [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p,
    ]  # fmt: skip
    lib.crypt_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.crypt_format.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
    ]  # fmt: skip
    lib.crypt_activate_by_volume_key.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
    ]  # fmt: skip
    lib.crypt_free.argtypes = [ctypes.c_void_p]
    return lib


def libcryptsetup_verify(data: Path, hash_file: Path, params: VerityParams, root: bytes) -> int:
    """libcryptsetup's userspace verification (what `veritysetup verify` calls).

    0 = valid, -EPERM (-1) = corrupted data or hash area, -EFAULT (-14) = root hash mismatch,
    other negative errno values for bad parameters.
    """
    lib = libcryptsetup()
    device = ctypes.c_void_p()
    status = lib.crypt_init_data_device(
        ctypes.byref(device), str(hash_file).encode(), str(data).encode()
    )
    assert status == 0, status
    try:
        verity = _CryptParamsVerity(
            hash_name=params.hash_algorithm.encode(),
            salt=params.salt,
            salt_size=len(params.salt),
            hash_type=params.hash_format,
            data_block_size=params.data_block_size,
            hash_block_size=params.hash_block_size,
            data_size=params.data_blocks,
            hash_area_offset=params.hash_offset,
            flags=CRYPT_VERITY_CHECK_HASH,
        )
        if params.superblock:
            status = lib.crypt_load(device, b"VERITY", ctypes.byref(verity))
        else:
            # Without a superblock crypt_format only sets the parameters; nothing is written
            # (CRYPT_VERITY_CREATE_HASH is not set).
            verity.flags |= CRYPT_VERITY_NO_HEADER
            status = lib.crypt_format(
                device, b"VERITY", None, None, None, None, 0, ctypes.byref(verity)
            )
        if status != 0:
            return status
        # A NULL name checks in userspace instead of activating (no device-mapper needed).
        return lib.crypt_activate_by_volume_key(device, None, root, len(root), 0)
    finally:
        lib.crypt_free(device)
