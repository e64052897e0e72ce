#!/usr/bin/env bash
# Sets up a fresh machine for enilab: system packages (iproute2), then a venv with the project and its
# dev extras. Idempotent; used by `make setup` and by CI.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[dev]'
echo "enilab: environment ready in $venv"
