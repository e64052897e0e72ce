#!/usr/bin/env bash
# Runs every test: unit, property, scenario, netns end-to-end (as root) and notebooks, in parallel.
# As root, tests marked `root` must run: ENILAB_REQUIRE_ROOT=1 turns a would-be skip into a failure.
set -euo pipefail
venv=${1:-.venv}
jobs=${2:-auto}
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
    export ENILAB_REQUIRE_ROOT=1
fi
"$venv/bin/ruff" check .
start=$(date +%s)
set +e
"$venv/bin/pytest" -n "$jobs" -q tests --nbmake labs
rc=$?
set -e
echo "enilab: test suite took $(( $(date +%s) - start )) s on $(nproc) cores"
[ "$rc" = 5 ] && { echo "enilab: no test ran; that is a failure" >&2; exit 1; }
exit "$rc"
