#!/usr/bin/env bash
# Sets up a fresh machine for enilab: system packages (as root: iproute2; podman and friends for the
# real-runtime test; chromium for the labs' browser test), then a venv with the project and its dev and
# browser extras, and the labs' Jupyter kernel. Idempotent; used by `make setup` and by CI.
# As a normal user it installs everything that needs no root, and says in one line what does.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

# Debian packages, and what each is for: iproute2 for the netns backend (and `ip` in the labs); podman, runc,
# busybox-static and containernetworking-plugins for pods as containers (lab 14, `--backend containers`), the
# real-runtime test and the reference plugin of `enilab bench cni` (Debian's ptp + host-local in
# /usr/lib/cni); chromium for the labs' browser test (playwright cannot download its own browser here);
# python3-venv for the venv itself.
declare -A needed_for=(
    [iproute2]="ip" [podman]="pods as containers" [runc]="pods as containers"
    [busybox-static]="pods as containers" [containernetworking-plugins]="enilab bench cni"
    [chromium]="the browser test" [python3-venv]="the venv"
)
missing=()
for package in iproute2 podman runc busybox-static containernetworking-plugins chromium python3-venv; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        core=()
        for p in "${missing[@]}"; do [ "$p" = chromium ] || core+=("$p"); done
        [ ${#core[@]} = 0 ] || apt-get install -y -qq "${core[@]}" >/dev/null
        if [ ${#core[@]} != ${#missing[@]} ]; then
            apt-get install -y -qq chromium >/dev/null ||
                echo "enilab: chromium could not be installed; as root the browser test will fail, not skip" >&2
        fi
    else
        what=$(for p in "${missing[@]}"; do printf '%s (%s), ' "$p" "${needed_for[$p]}"; done)
        echo "enilab: not root, so not installed: ${what%, }; as root, once: apt-get install -y ${missing[*]}" >&2
    fi
fi

# A Python this user can run, 3.11 or newer, that can make a venv: the one on PATH, else Debian's (the
# default python3 of a machine may live in another user's home, which this user cannot enter).
usable() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
if [ -e "$venv" ] && ! usable "$venv/bin/python"; then
    echo "enilab: $venv exists but $(id -un) cannot run its Python (made by another user, or broken); remove it" \
         "and run again" >&2
    exit 2
fi
if [ ! -e "$venv" ]; then
    python=
    for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
        if [ -n "$candidate" ] && usable "$candidate"; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "enilab: no Python 3.11 or newer with venv that $(id -un) can run (tried ${PYTHON:+$PYTHON, }python3," \
             "/usr/bin/python3); as root: apt-get install -y python3-venv, or set PYTHON=/path/to/python3" >&2
        exit 2
    fi
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[dev,browser]'
# The labs' kernel, "Python 3 (enilab)": a wheel installs it, an editable install does not, so it is put there.
"$venv/bin/jupyter" kernelspec install --sys-prefix --name enilab testbed/apps/kernelspec --log-level=ERROR
echo "enilab: environment ready in $venv"
