#!/usr/bin/env bash
# The test command (README, "Tests"), in two tiers. Each step prints its wall time.
#   scripts/test.sh              the full run (CI's .ci/run): the whole suite, two test files
#                                at a time; the checks; then the deploy tier, which builds the
#                                image and runs the compose stack on a Docker engine that
#                                scripts/docker/engine.sh starts where it can (skipped, with
#                                the reason, where it cannot)
#   scripts/test.sh fast [ARGS]  before every commit, some 3 minutes on 2 cores: every test
#                                module less its tests marked slow (pyproject, markers), then
#                                ruff; ARGS go to pytest
#   scripts/test.sh ARGS         pytest with ARGS, a chosen subset: no checks, no deploy tier
set -uo pipefail
cd "$(dirname "$0")/.."

timed() {  # timed LABEL COMMAND...: run COMMAND, print its wall time, return its status
    local label=$1 started=$SECONDS status
    shift
    "$@"; status=$?
    echo "== $label: $((SECONDS - started)) s (exit $status)"
    return $status
}
pytest() { .venv/bin/python -m pytest "$@"; }
checks() {
    # ruff, and mypy with every stagetune.* import resolved (pyproject, [tool.mypy])
    .venv/bin/ruff check . && .venv/bin/mypy && NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q --site-dir site
}

if [ "${1:-}" = fast ]; then
    shift
    timed "fast tier" pytest -m "not slow and not deploy" "$@"; suite=$?
    timed "ruff" .venv/bin/ruff check .; lint=$?
    [ $suite -ne 0 ] && exit $suite
    exit $lint
fi
if [ $# -gt 0 ]; then
    timed "pytest $*" pytest "$@"
    exit
fi

# the slowest tests in the log: where the full run's time goes
timed "suite" pytest --durations=25; suite=$?
timed "checks" checks; checks=$?
[ $suite -eq 0 ] && suite=$checks
bash scripts/docker/engine.sh
timed "deploy tier" pytest -m deploy -n 0 -s tests/deploy; deploy=$?
echo "== full run: $SECONDS s"
[ $suite -ne 0 ] && exit $suite
exit $deploy
