#!/usr/bin/env bash
# The main job. It grows with the project; for now it installs the project and runs its CLI.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/bootstrap.sh
.venv/bin/appliance --help
