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
# The notebooks run one at a time: two Jupyter kernels started at the same instant by two xdist workers
# can pick the same TCP ports, and the loser waits out a start-up timeout.
"$venv/bin/pytest" -q -p no:xdist --nbmake labs
labs_rc=$?
# --doctest-modules: the examples in eni_core's and testbed's docstrings run too, so they stay true.
"$venv/bin/pytest" -n "$jobs" -q --doctest-modules tests eni_core testbed
rc=$?
set -e
echo "enilab: test suite took $(( $(date +%s) - start )) s on $(nproc) cores"
for code in "$labs_rc" "$rc"; do
    [ "$code" = 5 ] && { echo "enilab: no test ran; that is a failure" >&2; exit 1; }
done
[ "$labs_rc" != 0 ] && exit "$labs_rc"
exit "$rc"
