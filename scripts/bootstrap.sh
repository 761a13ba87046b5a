#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Debian packages and the project's venv.
# Idempotent and quick when nothing changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# python3 (/usr/bin), util-linux (setpriv) and passwd (useradd): the engine-isolation tests run
# a fake engine as another user with the system Python. chromium and fonts-dejavu-core: the
# console's pages are tested in a real headless browser.
apt_packages=(cryptsetup-bin libcryptsetup12 squashfs-tools erofs-utils gcc systemd python3 util-linux passwd
    chromium fonts-dejavu-core)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "bootstrap: creating $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e ".[test]" 2> >(grep -v "is ignored: it is neither" >&2)
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
