#!/usr/bin/env bash
# Rewrite constraints.txt, the one lock file that scripts/install.sh and the Dockerfile
# install with, from the environment the suite runs in (.venv): every package with the version
# that was tested. Run it after changing the dependencies in pyproject.toml, then the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# The versions the test suite ran on: scripts/install.sh and the Dockerfile install with"
    echo "# these as pip constraints (-c). Made by scripts/lock.sh from .venv; do not edit by hand."
    .venv/bin/python -m pip freeze --exclude-editable --all | grep -v '^pip=='
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages"
