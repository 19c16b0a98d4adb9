#!/usr/bin/env bash
# The test command (README, "Tests"): the suite, two test files at a time, then the deploy
# tier, which builds the image and runs the compose stack on a Docker engine that
# scripts/docker/engine.sh starts where it can (skipped, with the reason, where it cannot).
# Arguments go to the first pytest run, e.g. `scripts/test.sh -m "not slow"` for the fast tier.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"; suite=$?
[ $# -eq 0 ] || exit $suite  # a chosen subset: no checks, no deploy tier
# the checks: ruff, and mypy with every stagetune.* import resolved (pyproject, [tool.mypy])
.venv/bin/ruff check . && .venv/bin/mypy; checks=$?
[ $suite -eq 0 ] && suite=$checks
bash scripts/docker/engine.sh
.venv/bin/python -m pytest -m deploy -n 0 -s tests/deploy; deploy=$?
[ $suite -ne 0 ] && exit $suite
exit $deploy
