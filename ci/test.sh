#!/usr/bin/env bash
# Runs every test: unit, property, scenario, netns end-to-end (as root), the labs and the labs in a browser,
# then the netns tests again as an unprivileged user (rootless). As root, tests marked `netns` or
# `host_root` must run: ENILAB_REQUIRE_ROOT=1 turns a would-be skip into a failure.
set -euo pipefail
venv=${1:-.venv}
jobs=${2:-auto}
cd "$(dirname "$0")/.."
# Property tests run derandomized (the same examples every run); `make fuzz` explores at random.
export ENILAB_HYPOTHESIS_PROFILE=ci
if [ "$(id -u)" = 0 ]; then
    export ENILAB_REQUIRE_ROOT=1
fi
"$venv/bin/ruff" check .
start=$(date +%s)

# The labs run as a learner's would: from a non-editable install of enilab (its wheel unpacked first on the
# path, so the notebooks' built-in topologies come from the installed package, not the source tree), once
# with the hidden solutions (every check must pass) and once with wrong answers (each must say "Not quite").
# One notebook at a time: two Jupyter kernels started at the same instant by two xdist workers can pick
# the same TCP ports, and the loser waits out a start-up timeout.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$venv/bin/python" -m pip wheel -q --no-deps -w "$site/wheel" . >/dev/null
"$venv/bin/python" -m pip install -q --no-deps --target "$site/lib" "$site"/wheel/*.whl
python_abs=$(cd "$venv/bin" && pwd)/python
(cd labs && PYTHONPATH="$site/lib" "$python_abs" -c \
    'import sys, testbed.apps.labs as m; assert m.__file__.startswith(sys.argv[1]), m.__file__' "$site/lib")

set +e
labs_rc=0
for answers in 1 wrong; do
    echo "enilab: the labs with ENILAB_LAB_SOLUTIONS=$answers"
    ENILAB_LAB_SOLUTIONS=$answers PYTHONPATH="$site/lib" "$venv/bin/pytest" -q -p no:xdist --nbmake labs
    rc_one=$?
    [ "$labs_rc" = 0 ] && labs_rc=$rc_one
done
# Every netns test again as `nobody`, on the rootless path: the session enters a user namespace of its own
# before its workers start (tests/rootless/asnobody.py: a venv from /usr/bin/python3 and the checkout bound
# where nobody can read it). ENILAB_REQUIRE_NETNS=1: none may skip for want of namespaces; the tests that
# need the host's root (host_root) skip, each saying why. After the labs, not beside them: both start
# podman (lab 14, tests/containers), and once, beside this pass, the labs took 300 s longer.
rootless_rc=0
if [ "$(id -u)" = 0 ]; then
    echo "enilab: the netns tests again as nobody (rootless)"
    env -u ENILAB_REQUIRE_ROOT ENILAB_REQUIRE_NETNS=1 "$venv/bin/python" -m tests.rootless.asnobody \
        -m pytest -n "$jobs" -q -p no:cacheprovider -m netns tests
    rootless_rc=$?
fi
# A normal user made for the test clones this checkout and runs `make demo`; then every lab in JupyterLab
# started as that user, in a real browser (chromium), one browser for all, screenshots in artifacts/labs/.
"$venv/bin/pytest" -q -p no:xdist tests/browser
browser_rc=$?
# --doctest-modules: the examples in eni_core's and testbed's docstrings run too, so they stay true.
"$venv/bin/pytest" -n "$jobs" -q --doctest-modules tests eni_core testbed --ignore=tests/browser
rc=$?
set -e
echo "enilab: test suite took $(( $(date +%s) - start )) s on $(nproc) cores"
for code in "$labs_rc" "$browser_rc" "$rc" "$rootless_rc"; do
    [ "$code" = 5 ] && { echo "enilab: no test ran; that is a failure" >&2; exit 1; }
done
for code in "$labs_rc" "$browser_rc" "$rootless_rc"; do
    [ "$code" != 0 ] && exit "$code"
done
exit "$rc"
