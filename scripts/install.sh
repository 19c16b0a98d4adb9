#!/usr/bin/env bash
# Install everything stagetune needs on a fresh Debian machine: system packages, then a
# virtual environment in .venv with the project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the dashboard's browser tests (headless, driven by Playwright's Python package)
system_packages=(dataset-fashion-mnist chromium)
missing=()
for pkg in "${system_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt: the versions the suite was run on (scripts/lock.sh), the image's too
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
