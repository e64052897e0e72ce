#!/usr/bin/env bash
# Sets up a fresh machine for enilab: system packages (as root: iproute2; podman and friends for the
# real-runtime test; chromium for the labs' browser test), then a venv with the project and its dev and
# browser extras. Idempotent; used by `make setup` and by CI.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

# iproute2 for the netns backend; podman, runc, busybox-static and containernetworking-plugins for the
# real-runtime test (podman runs a busybox rootfs wired by enilab-cni) and the reference plugin of
# `enilab bench cni` (Debian's ptp + host-local in /usr/lib/cni)
if [ "$(id -u)" = 0 ]; then
    missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
    [ -x /usr/lib/cni/ptp ] || missing+=(containernetworking-plugins)
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
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
