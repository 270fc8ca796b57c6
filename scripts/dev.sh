#!/usr/bin/env bash
# One entry point for setting up, running and testing gateway on a fresh Debian machine.
#
#   bash scripts/dev.sh setup [--wheel]   install system packages, the Python venv and pjsua2
#   bash scripts/dev.sh run               setup, then start the gateway on its embedded default
#   bash scripts/dev.sh test              setup, then ruff, mypy and the whole test suite
#   bash scripts/dev.sh test-wheel        the SIP smoke tests (-m "sip and smoke") on the PyPI
#                                         wheel, in its own venv (.venv-wheel)
#   bash scripts/dev.sh test-docker       the docker tier alone (-m docker): the image built with
#                                         podman and a call to it (needs root), compose files
#
# pjsua2 comes from the official pjproject source, built by scripts/build-pjsua2.sh (a few
# minutes the first time, then cached outside the repo), or, with --wheel or
# GATEWAY_PJSUA2=wheel, from the PyPI wheel pjsua2-python (no compiler; 4 call slots).
# Setup is idempotent: system packages are installed only when missing, the venv is rebuilt
# only when pyproject.toml or the binding choice changes, and the binding only when its inputs
# change. Environment: GATEWAY_VENV, GATEWAY_PYTHON, GATEWAY_PJSUA2=source|wheel,
# GATEWAY_WHEEL_VENV, GATEWAY_BUILD_CACHE, PJPROJECT_TARBALL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PYTHON="${GATEWAY_PYTHON:-python3.11}"
BINDING="${GATEWAY_PJSUA2:-source}"
APT_PACKAGES=(sip-tester espeak-ng sox kamailio kamailio-tls-modules tshark tcpdump postgresql
    chromium chromium-driver fonts-dejavu-core  # these three: the monitor's browser tests
    podman runc mmdebstrap docker-compose)      # these four: the docker tier (tests/docker)
# Only for building pjsua2 from source (plus the Python headers, see python_packages).
BUILD_APT_PACKAGES=(build-essential swig libssl-dev uuid-dev pkg-config curl ca-certificates)
# The PyPI binding, as the `wheel` extra in pyproject.toml names it.
WHEEL_REQUIREMENT="pjsua2-python==2.15.1.post1"

log() { printf '[dev] %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python3
fi

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then echo sudo; else
            log "not root and no sudo: install ${APT_PACKAGES[*]} by hand"; echo ""; fi
    fi
}

# Debian's own python3.X needs python3.X-venv for `-m venv` and python3.X-dev for the headers
# the source binding compiles against; other interpreters (pyenv, a build) bring both.
python_packages() {
    local real ver
    real="$(readlink -f "$(command -v "$PYTHON")")"
    case "$real" in /usr/bin/*) ;; *) return ;; esac
    ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || echo "python$ver-venv"
    if [ "$BINDING" = source ] && ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        echo "python$ver-dev"
    fi
}

setup_system() {
    local wanted=("${APT_PACKAGES[@]}") missing=() pkg
    if [ "$BINDING" = source ]; then
        wanted+=("${BUILD_APT_PACKAGES[@]}")
    fi
    while read -r pkg; do [ -n "$pkg" ] && wanted+=("$pkg"); done < <(python_packages)
    for pkg in "${wanted[@]}"; do
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

# True when the venv has a distribution whose dist-info directory matches $1.
has_dist() {
    compgen -G "$VENV/lib/python*/site-packages/$1-*.dist-info" >/dev/null
}

# The PyPI wheel as the venv's only pjsua2: its pjsua2/ package would shadow the source
# build's pjsua2.py (or be shadowed) without any error, so the other one goes first.
install_wheel_binding() {
    if has_dist pjsua2; then
        log "removing the source-built pjsua2 from $VENV"
        "$VENV/bin/pip" uninstall -q -y pjsua2
    fi
    if ! has_dist pjsua2_python; then
        "$VENV/bin/pip" install -q "$WHEEL_REQUIREMENT"
    fi
    echo "wheel $WHEEL_REQUIREMENT" >"$VENV/.pjsua2-binding"
}

setup_python() {
    case "$BINDING" in
        source|wheel) ;;
        *) log "GATEWAY_PJSUA2 must be 'source' or 'wheel', not '$BINDING'"; exit 2 ;;
    esac
    local stamp="$VENV/.gateway-stamp"
    local want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) pjsua2=$BINDING"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/gateway" ]; then
        if [ "$BINDING" = source ]; then
            # Cheap when nothing changed: checks the cache key and the installed module.
            bash "$ROOT/scripts/build-pjsua2.sh" --venv "$VENV"
        elif has_dist pjsua2 || ! has_dist pjsua2_python; then
            install_wheel_binding
        fi
        return
    fi
    log "creating venv in $VENV (pjsua2: $BINDING)"
    rm -f "$stamp"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    if [ "$BINDING" = wheel ]; then
        install_wheel_binding
        "$VENV/bin/pip" install -q -e "${ROOT}[dev,wheel]"
    else
        "$VENV/bin/pip" install -q -e "${ROOT}[dev]"
        bash "$ROOT/scripts/build-pjsua2.sh" --venv "$VENV"
    fi
    echo "$want" >"$stamp"
}

setup() {
    setup_system
    setup_python
}

# Hundreds of calls need far more than 1024 descriptors (2 RTP sockets + 1 WebSocket each).
raise_nofile() {
    local hard
    hard="$(ulimit -Hn)"
    [ "$hard" = unlimited ] && hard=1048576
    [ "$hard" -gt 65536 ] && hard=65536
    if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$hard" ]; then
        ulimit -Sn "$hard" 2>/dev/null || true
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup)
        for arg in "$@"; do
            case "$arg" in
                --wheel) BINDING=wheel ;;
                --source) BINDING=source ;;
                *) log "unknown setup option: $arg"; exit 2 ;;
            esac
        done
        setup
        ;;
    run)
        setup
        cd "$ROOT"
        raise_nofile
        exec "$VENV/bin/gateway" run "$@"
        ;;
    test)
        setup
        cd "$ROOT"
        raise_nofile
        log "ruff"
        "$VENV/bin/ruff" check gateway tests $( [ -d bench ] && echo bench ) docker
        log "mypy"
        "$VENV/bin/mypy"
        log "pytest"
        exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
        ;;
    test-docker)
        setup
        cd "$ROOT"
        log "pytest -m docker"
        exec "$VENV/bin/pytest" -p no:cacheprovider -m docker "$@"
        ;;
    test-wheel)
        BINDING=wheel
        VENV="${GATEWAY_WHEEL_VENV:-$ROOT/.venv-wheel}"
        setup
        cd "$ROOT"
        raise_nofile
        log "pytest -m 'sip and smoke' on the PyPI wheel ($VENV)"
        exec "$VENV/bin/pytest" -p no:cacheprovider -m "sip and smoke" "$@"
        ;;
    *)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
        exit 2
        ;;
esac
