#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every tier.
# The real-engine tier (vLLM CPU build) runs unless APPLIANCE_SKIP_ENGINE=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/bootstrap.sh
if [ "${APPLIANCE_SKIP_ENGINE:-0}" != 1 ]; then
    scripts/engine.sh
    export APPLIANCE_REQUIRE_ENGINE=1
fi
exec .venv/bin/python -m pytest "$@"
