#!/usr/bin/env bash
# Sets up a fresh machine for enilab: system packages (iproute2; chromium for the labs' browser test), then
# a venv with the project and its dev and browser extras. Idempotent; used by `make setup` and by CI.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

# The browser test drives Debian's chromium (playwright cannot download its own browser here).
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
        echo "enilab: chromium could not be installed; as root the browser test will fail, not skip" >&2
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[dev,browser]'
echo "enilab: environment ready in $venv"
