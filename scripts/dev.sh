#!/usr/bin/env bash
# One entry point for setting up, running and testing gateway on a fresh Debian machine.
#
#   bash scripts/dev.sh setup   install system packages and the Python venv (idempotent)
#   bash scripts/dev.sh run     setup, then start the gateway on its embedded default
#   bash scripts/dev.sh test    setup, then ruff, mypy and the whole test suite
#
# Setup is idempotent: system packages are installed only when missing, and the venv is
# rebuilt only when pyproject.toml changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PYTHON="${GATEWAY_PYTHON:-python3.11}"
APT_PACKAGES=(sip-tester espeak-ng sox kamailio tshark tcpdump)

log() { printf '[dev] %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then echo sudo; else
            log "not root and no sudo: install ${APT_PACKAGES[*]} by hand"; echo ""; fi
    fi
}

setup_system() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    log "installing system packages: ${missing[*]}"
    local sudo
    sudo="$(need_root)"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer for it.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | $sudo debconf-set-selections 2>/dev/null || true
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_python() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        PYTHON=python3
    fi
    local stamp="$VENV/.gateway-stamp"
    local want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/gateway" ]; then
        return
    fi
    log "creating venv in $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "$ROOT[dev]"
    echo "$want" >"$stamp"
}

setup() {
    setup_system
    setup_python
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup)
        setup
        ;;
    run)
        setup
        cd "$ROOT"
        exec "$VENV/bin/gateway" run "$@"
        ;;
    test)
        setup
        cd "$ROOT"
        log "ruff"
        "$VENV/bin/ruff" check gateway tests $( [ -d bench ] && echo bench )
        log "mypy"
        "$VENV/bin/mypy"
        log "pytest"
        exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
        ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
