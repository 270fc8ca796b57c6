#!/usr/bin/env bash
# Build pjproject 2.17 from the official source for a SIP server and install its SWIG Python
# binding into the project's venv as the `pjsua2` module.
#
#   bash scripts/build-pjsua2.sh [--venv DIR] [--no-install]
#
#   --venv DIR     venv to install into (default: $GATEWAY_VENV, else .venv); its Python is the
#                  one the binding is built for
#   --no-install   build (or find) the cached wheel and print its path; leave the venv alone
#
# Source: $PJPROJECT_TARBALL, else ../shared/vendor/pjproject-2.17.tar.gz (next to the repo),
# else a copy downloaded earlier into the cache, else the official release from GitHub. Every
# tarball is checked against the pinned sha256 before use; a mismatch is refused.
#
# Cache: ${GATEWAY_BUILD_CACHE:-~/.cache/gateway-pjsua2}/<key>/ holds the built wheel and the
# build's headers. The key covers the tarball's sha256, the configure flags, config_site.h,
# the build functions of this script and the Python build, so changing any of them rebuilds;
# otherwise a run costs well under a second (pip install of the cached wheel when the venv
# lacks it, nothing when it has it).
#
# Also compiled and installed next to the binding: the gateway's native media port,
# gateway/sip/gwmedia.c -> libgwmedia.so (about a second, redone when the file changes).
#
# Debian build dependencies (installed by scripts/dev.sh setup): build-essential swig
# libssl-dev uuid-dev pkg-config, and the Python headers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/build-pjsua2.sh"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
CACHE_ROOT="${GATEWAY_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gateway-pjsua2}"
JOBS="${GATEWAY_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

PJ_VERSION=2.17
PJ_URL="https://github.com/pjsip/pjproject/archive/refs/tags/$PJ_VERSION.tar.gz"
# sha256 of the release tarball (git archive of tag 2.17, commit 5a457451fa27...).
PJ_SHA256=37a69aaa19b416f9c9580ad00f0a68fedd92191a38871e17ac229a0d0a87ee58
# sha256 of the *uncompressed* tar inside it. GitHub makes its archive with the same
# `git archive` but may compress it differently, so a download whose .tar.gz hash differs is
# still accepted when the tar stream itself is byte-identical to the pinned release.
PJ_TAR_SHA256=a56dd79d978ce8d796969ee3f43b6e9e586d38aec7328645504f5b4e6255ad2c

# Assertions: OFF (-DNDEBUG), deliberately.
# With assertions on (the PyPI wheel), an input a remote peer controls can trip an assert and
# abort the process, and with it every call it carries: an ACK for a 200 without a To tag
# (sip_util.c pjsip_endpt_create_response) and an INVITE burst that exhausts the ioqueue were
# both seen to kill the wheel's process. With hundreds of calls per process that is not
# acceptable. With NDEBUG, 2.17's pj_assert() logs "Assert failed: <expr>" (level 1) and
# carries on, PJ_ASSERT_RETURN() still returns its error (a pjsua2.Error in Python), and plain
# assert() is compiled out, so the argument checks still refuse the bad input; only the abort
# goes. The cost: a real internal bug shows as an "Assert failed" log line, not a core dump,
# and misusing pjsua2 from an unregistered thread no longer aborts loudly. That is why CI still
# runs a SIP smoke subset on the wheel (assertions on), and why config_site.h refuses to build
# without NDEBUG.
BUILD_CFLAGS="-O2 -fPIC -DNDEBUG"

# Static libraries (configure's default) with -fPIC, linked into one _pjsua2 extension.
# G.711 (PCMU/PCMA) stays; every optional codec, video and device library goes.
CONFIGURE_FLAGS=(
    --enable-epoll
    --disable-video
    --disable-sound
    --disable-opus
    --disable-speex-codec
    # The gateway runs without echo canceller (ecTailLen 0); and without the Speex codec 2.17
    # leaves echo_speex.o out while echo_common.c still calls it (undefined speex_aec_create).
    --disable-speex-aec
    --disable-gsm-codec
    --disable-ilbc-codec
    --disable-g722-codec
    --disable-g7221-codec
    --disable-l16-codec
    --disable-bcg729
    --disable-opencore-amr
    --disable-silk
    --disable-lyra
    --disable-ffmpeg
    --disable-v4l2
    --disable-sdl
    --disable-openh264
    --disable-vpx
    --disable-libyuv
    --disable-libwebrtc
    --disable-upnp
)

config_site() {
    cat <<'EOF'
/* Written by gateway's scripts/build-pjsua2.sh: pjproject for a SIP gateway server. */
#if !defined(NDEBUG) && !defined(SWIG)
#  error "build with -DNDEBUG: see the comment on assertions in scripts/build-pjsua2.sh"
#endif

/* Hundreds of calls in one process (pjsua silently clamps UaConfig.maxCalls to this). The
 * conference clock thread saturates at about 350-400 calls on a 2-core box, so 512 is the
 * compile-time ceiling, not a target. */
#define PJSUA_MAX_CALLS             512
/* Two bridge slots per call (the call's stream and the gateway's AudioMediaPort), plus room
 * for players, recorders and the master port. Default of MediaConfig.maxMediaPorts. */
#define PJSUA_MAX_CONF_PORTS        (2 * PJSUA_MAX_CALLS + 64)
/* A trunk account plus a few registrations, not a softphone's buddy list. */
#define PJSUA_MAX_ACC               32

/* epoll ioqueue (--enable-epoll). Each call holds 2 RTP/RTCP sockets and refused INVITEs hold
 * theirs for a while; the SIP and media endpoints each create their ioqueue with this size
 * (the select() default of 64 aborted the wheel under an INVITE burst). */
#define PJ_IOQUEUE_MAX_HANDLES      4096
/* Plain level-triggered epoll. The default (AUTO) picks EPOLLEXCLUSIVE, which only matters
 * when several threads poll one ioqueue; ours each have one poller (the gateway's SIP thread;
 * MediaConfig.threadCnt = 1). With it, every re-arm of a socket is EPOLL_CTL_DEL + ADD
 * (epoll_ctl(2) refuses MOD for it): four system calls per received RTP packet on the media
 * thread instead of two. */
#define PJ_IOQUEUE_DEFAULT_EPOLL_FLAGS  0

/* Hash-table sizes (2^n - 1) for hundreds of dialogs and their transactions. */
#define PJSIP_MAX_TSX_COUNT         (8192 - 1)
#define PJSIP_MAX_DIALOG_COUNT      (4096 - 1)

/* No video, no sound device (the conference bridge runs on the null device clock). */
#define PJMEDIA_HAS_VIDEO           0

/* TLS 1.2 and 1.3 (system OpenSSL 3). pjsip's own default is TLS 1.0-1.2, which would never
 * offer 1.3; 1.0 and 1.1 are deprecated (RFC 8996). TlsConfig.proto still overrides this. */
#define PJSIP_SSL_DEFAULT_PROTO     (PJ_SSL_SOCK_PROTO_TLS1_2 | PJ_SSL_SOCK_PROTO_TLS1_3)
EOF
}

log() { printf '[pjsua2] %s\n' "$*" >&2; }
die() { printf '[pjsua2] error: %s\n' "$*" >&2; exit 1; }

INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --venv=*) VENV="${1#--venv=}"; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) sed -n '2,21p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

PY="$VENV/bin/python"
[ -x "$PY" ] || die "no Python in $VENV: create the venv first (bash scripts/dev.sh setup)"

# Outside the work tree: a build tree there would show up in git, ruff and pytest.
CACHE_ROOT="$(realpath -m "$CACHE_ROOT")"
case "$CACHE_ROOT/" in
    "$(realpath "$ROOT")/"*)
        die "GATEWAY_BUILD_CACHE ($CACHE_ROOT) is inside the repository; put it outside" ;;
esac
mkdir -p "$CACHE_ROOT"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Succeeds when $1 is the pinned pjproject release; explains and fails otherwise.
verify_tarball() {
    local file="$1" got
    got="$(sha256 "$file")"
    if [ "$got" = "$PJ_SHA256" ]; then
        return 0
    fi
    if [ "$(gzip -dc "$file" 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$PJ_TAR_SHA256" ]; then
        log "$file: same tar as the pinned release, compressed differently; accepted"
        return 0
    fi
    log "sha256 mismatch for $file"
    log "  got      $got"
    log "  expected $PJ_SHA256 (pjproject $PJ_VERSION, commit 5a457451fa27)"
    return 1
}

find_tarball() {
    local vendor="$ROOT/../shared/vendor/pjproject-$PJ_VERSION.tar.gz"
    local dl="$CACHE_ROOT/downloads/pjproject-$PJ_VERSION.tar.gz"
    if [ -n "${PJPROJECT_TARBALL:-}" ]; then
        [ -f "$PJPROJECT_TARBALL" ] || die "PJPROJECT_TARBALL=$PJPROJECT_TARBALL: no such file"
        verify_tarball "$PJPROJECT_TARBALL" || die "refusing to build from $PJPROJECT_TARBALL"
        TARBALL="$PJPROJECT_TARBALL"
    elif [ -f "$vendor" ]; then
        verify_tarball "$vendor" || die "refusing to build from $vendor"
        TARBALL="$(cd "$(dirname "$vendor")" && pwd -P)/$(basename "$vendor")"
    elif [ -f "$dl" ] && verify_tarball "$dl"; then
        TARBALL="$dl"
    else
        command -v curl >/dev/null 2>&1 || die "curl is needed to download $PJ_URL"
        mkdir -p "$(dirname "$dl")"
        log "downloading $PJ_URL"
        rm -f "$dl.part"
        curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$dl.part" "$PJ_URL" \
            || die "download of $PJ_URL failed (or set PJPROJECT_TARBALL to a local copy)"
        if ! verify_tarball "$dl.part"; then
            rm -f "$dl.part"
            die "the downloaded pjproject does not match the pinned release; refusing to build"
        fi
        mv "$dl.part" "$dl"
        TARBALL="$dl"
    fi
    TARBALL_SHA="$(sha256 "$TARBALL")"
}

find_tarball

PY_ID="$("$PY" -c 'import sys, sysconfig
print(sys.version.replace("\n", " "), sysconfig.get_config_var("SOABI"), sys.base_prefix)')"
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

cached_wheel() { compgen -G "$KEY_DIR/pjsua2-*.whl" | head -n1 || true; }

T0=$SECONDS
LOG=""
TMP=""

# Runs one build stage with its output in the log; on failure shows the log's tail and exits.
stage() {
    local name="$1" start=$SECONDS
    shift
    printf '\n===== %s: %s\n' "$name" "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        log "$name FAILED after $((SECONDS - start)) s; last lines of $LOG:"
        tail -n 40 "$LOG" | sed 's/^/    /' >&2
        exit 1
    fi
    log "$(printf '%-12s %4d s  (total %d s)' "$name" $((SECONDS - start)) $((SECONDS - T0)))"
}

# Post-configure checks: fail early and clearly when configure silently dropped a feature.
check_configure() {
    local os_auto=pjlib/include/pj/compat/os_auto.h
    grep -Eq 'define +PJ_SSL_SOCK_IMP +PJ_SSL_SOCK_IMP_OPENSSL' "$os_auto" \
        || { echo "configure did not find OpenSSL (install libssl-dev)"; return 1; }
    grep -Eq 'define +PJ_IOQUEUE_IMP +PJ_IOQUEUE_IMP_EPOLL' "$os_auto" \
        || { echo "configure did not select the epoll ioqueue"; return 1; }
    if grep -q 'PJMEDIA_HAS_SRTP=0' build.mak; then
        echo "configure disabled SRTP"; return 1
    fi
}

generate_swig() { make -C pjsip-apps/src/swig/python pjsua2_wrap.cpp; }

build_wheel() {
    # No RUNPATH in the extension: Python's own LDSHARED may carry the build interpreter's
    # -rpath (pyenv does), and the module only needs system libraries (libssl.so.3, libcrypto,
    # libuuid, libstdc++). Debug info (Python's -g) is stripped: 49 MB -> about 9 MB.
    (cd pjsip-apps/src/swig/python \
        && PIP_DISABLE_PIP_VERSION_CHECK=1 \
           LDSHARED="${CC:-gcc} -shared" LDCXXSHARED="${CXX:-g++} -shared" \
           LDFLAGS="-Wl,--strip-debug" \
           "$PY" -m pip wheel --no-deps --no-cache-dir --wheel-dir "$TMP/dist" .)
}

# Loads the built module from the unpacked wheel and checks what this script promises.
check_module() {
    local so
    rm -rf "$TMP/check" && mkdir -p "$TMP/check"
    "$PY" -m zipfile -e "$TMP"/dist/pjsua2-*.whl "$TMP/check"
    so="$(compgen -G "$TMP/check/_pjsua2*.so" | head -n1)"
    [ -n "$so" ] || { echo "no _pjsua2*.so in the wheel"; return 1; }
    # (Outputs go through variables: `cmd | grep -q` fails under pipefail when grep exits early.)
    local ldd_out dyn syms sym
    ldd_out="$(ldd "$so")"
    dyn="$(readelf -d "$so")"
    syms="$(nm -D --defined-only "$so")"
    printf -- '--- ldd %s\n%s\n--- dynamic section\n' "$so" "$ldd_out"
    grep -E 'NEEDED|RPATH|RUNPATH' <<<"$dyn"
    if grep -q 'not found' <<<"$ldd_out"; then echo "unresolved libraries"; return 1; fi
    if grep -Eq 'RPATH|RUNPATH' <<<"$dyn"; then echo "unexpected RUNPATH"; return 1; fi
    grep -q 'libssl\.so\.3' <<<"$dyn" || { echo "not linked with OpenSSL 3"; return 1; }
    # The gateway calls a few pjsip C functions SWIG does not wrap through ctypes on this very
    # file (gateway/sip/_pj.py native()), so pjproject's symbols must stay exported.
    for sym in pjsua_call_get_max_count pjsua_get_pjsip_endpt pjsip_endpt_register_module \
        pjsip_endpt_respond_stateless pjsip_endpt_create_pool pjsip_hdr_clone; do
        grep -qw "$sym" <<<"$syms" || { echo "$sym not exported"; return 1; }
    done
    # SRTP (bundled libsrtp) and the TLS transport made it in.
    for sym in pjmedia_transport_srtp_create srtp_create pjsip_tls_transport_start2; do
        grep -qw "$sym" <<<"$syms" || { echo "no $sym: SRTP/TLS missing"; return 1; }
    done
    (cd "$TMP/check" && PYTHONPATH="$TMP/check" timeout 60 "$PY" - <<'EOF'
import ctypes
import os

import pjsua2 as pj
from pjsua2 import _pjsua2

assert os.path.basename(pj.__file__) == "pjsua2.py", pj.__file__
assert pj.UaConfig().maxCalls >= 512, pj.UaConfig().maxCalls
assert pj.MediaConfig().maxMediaPorts >= 2 * 512, pj.MediaConfig().maxMediaPorts
tls13 = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
assert pj.TlsConfig().proto == tls13, pj.TlsConfig().proto
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.maxCalls = 1000
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.logConfig.level = 4
cfg.logConfig.consoleLevel = 4
ep.libInit(cfg)
lib = ctypes.CDLL(_pjsua2.__file__)
slots = lib.pjsua_call_get_max_count()
assert slots == 512, slots
ep.audDevManager().setNullDev()
tc = pj.TransportConfig()
tc.port = 0
tc.boundAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)
ep.libStart()
codecs = sorted(c.codecId for c in ep.codecEnum2())
version = ep.libVersion().full
ep.libDestroy()
print("version", version, "call slots", slots)
print("codecs", codecs)
assert version.startswith("2.17"), version
assert {"PCMU/8000/1", "PCMA/8000/1"} <= set(codecs), codecs
EOF
    ) >"$TMP/check.out" 2>&1 || { cat "$TMP/check.out"; return 1; }
    cat "$TMP/check.out"
    grep -q 'epoll I/O Queue created' "$TMP/check.out" || { echo "not the epoll ioqueue"; return 1; }
}

build() {
    mkdir -p "$CACHE_ROOT/logs"
    LOG="$CACHE_ROOT/logs/$KEY.log"
    : >"$LOG"
    TMP="$(mktemp -d "$CACHE_ROOT/tmp.XXXXXX")"
    if [ "${GATEWAY_BUILD_KEEP:-0}" = 1 ]; then
        trap 'log "build tree kept in $TMP"' EXIT
    else
        trap 'rm -rf "$TMP"' EXIT
    fi
    log "building pjproject $PJ_VERSION for $("$PY" -c 'import sys; print(sys.version.split()[0])')" \
        "with $JOBS jobs (a few minutes; log: $LOG)"
    {
        echo "key $KEY"; echo "tarball $TARBALL ($TARBALL_SHA)"
        echo "CFLAGS=$BUILD_CFLAGS"; echo "configure ${CONFIGURE_FLAGS[*]}"
    } >>"$LOG"
    mkdir -p "$TMP/src"
    stage unpack tar -xzf "$TARBALL" -C "$TMP/src" --strip-components=1
    cd "$TMP/src"
    config_site >pjlib/include/pj/config_site.h
    cat pjlib/include/pj/config_site.h >>"$LOG"
    stage configure env CFLAGS="$BUILD_CFLAGS" CXXFLAGS="$BUILD_CFLAGS" \
        ./configure "${CONFIGURE_FLAGS[@]}"
    stage check-config check_configure
    stage make make -j"$JOBS" lib
    stage swig generate_swig
    stage wheel build_wheel
    stage check check_module
    local staging="$CACHE_ROOT/.$KEY.new"
    rm -rf "$staging" && mkdir -p "$staging"
    cp "$TMP"/dist/pjsua2-*.whl "$staging/"
    cp pjlib/include/pj/config_site.h "$LOG" "$staging/"
    # The headers of exactly this build (with its config_site.h and configure's os_auto.h),
    # for the gateway's own media port (gateway/sip/gwmedia.c), compiled against them below.
    mkdir -p "$staging/include"
    for dir in pjlib pjlib-util pjnath pjmedia pjsip; do
        cp -r "$dir/include/." "$staging/include/"
    done
    {
        echo "tarball $TARBALL_SHA"; echo "python $PY_ID"
        echo "CFLAGS=$BUILD_CFLAGS"; echo "configure ${CONFIGURE_FLAGS[*]}"
        echo "built $(date -u +%FT%TZ) in $((SECONDS - T0)) s"
    } >"$staging/build-info.txt"
    rm -rf "$KEY_DIR"
    mv "$staging" "$KEY_DIR"
    cd "$ROOT"
    log "built $(basename "$(cached_wheel)") in $((SECONDS - T0)) s -> $KEY_DIR"
}

KEY_HASH="$({
    echo "tarball $TARBALL_SHA"
    echo "cflags $BUILD_CFLAGS"
    echo "configure ${CONFIGURE_FLAGS[*]}"
    config_site
    # The build recipe itself (not the rest of this script, so that install-side changes do
    # not force a rebuild).
    declare -f build build_wheel generate_swig check_configure check_module
    echo "python $PY_ID"
} | sha256sum | cut -c1-16)"
KEY="pjproject-$PJ_VERSION-$PY_TAG-$KEY_HASH"
KEY_DIR="$CACHE_ROOT/$KEY"

# One build at a time per cache (two setups at once wait for each other, then share it).
exec 9>"$CACHE_ROOT/.lock"
flock -w 3600 9 || die "timed out waiting for another build holding $CACHE_ROOT/.lock"
if [ -z "$(cached_wheel)" ]; then
    build
fi
flock -u 9
WHEEL="$(cached_wheel)"
[ -n "$WHEEL" ] || die "no wheel in $KEY_DIR after the build"

if [ "$INSTALL" = 0 ]; then
    echo "$WHEEL"
    exit 0
fi

# ---- install into the venv: exactly one pjsua2 binding, the source build -------------------
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MARKER="$VENV/.pjsua2-binding"
GWMEDIA_SRC="$ROOT/gateway/sip/gwmedia.c"
GWMEDIA_MARKER="$VENV/.gwmedia"

# The gateway's native media port: compiled against this build's headers and linked to its
# _pjsua2 module (found beside it at run time through $ORIGIN). Under a second; redone when
# gwmedia.c or the pjproject build changes.
install_gwmedia() {
    local so want out="$SITE/libgwmedia.so"
    so="$(compgen -G "$SITE/_pjsua2*.so" | head -n1)"
    want="$(sha256 "$GWMEDIA_SRC") $KEY"
    if [ -f "$out" ] && [ -f "$GWMEDIA_MARKER" ] && [ "$(cat "$GWMEDIA_MARKER")" = "$want" ]; then
        return 0
    fi
    [ -d "$KEY_DIR/include" ] || die "no pjproject headers in $KEY_DIR (remove it to rebuild)"
    rm -f "$GWMEDIA_MARKER"
    "${CC:-gcc}" -O2 -fPIC -DNDEBUG -DPJ_AUTOCONF=1 -Wall -Werror -shared \
        -I"$KEY_DIR/include" "$GWMEDIA_SRC" -o "$out.tmp" \
        -L"$SITE" -l:"$(basename "$so")" -Wl,-rpath,'$ORIGIN' -Wl,--no-undefined -lpthread \
        || die "gwmedia.c did not compile"
    mv "$out.tmp" "$out"
    echo "$want" >"$GWMEDIA_MARKER"
    log "native media port built: $out"
}
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "source $KEY" ] \
    && compgen -G "$SITE/pjsua2-$PJ_VERSION.dist-info" >/dev/null \
    && compgen -G "$SITE/_pjsua2*.so" >/dev/null \
    && ! compgen -G "$SITE/pjsua2_python-*.dist-info" >/dev/null \
    && [ ! -e "$SITE/pjsua2/__init__.py" ]; then
    log "pjsua2 $PJ_VERSION (source build) already installed in $VENV"
    install_gwmedia
    exit 0
fi

rm -f "$MARKER"
# The PyPI wheel's pjsua2/ package would shadow pjsua2.py without a word: remove it first.
if compgen -G "$SITE/pjsua2_python-*.dist-info" >/dev/null || [ -e "$SITE/pjsua2/__init__.py" ]; then
    log "removing the PyPI wheel pjsua2-python from $VENV"
    "$PY" -m pip uninstall -q -y pjsua2-python
fi
log "installing $(basename "$WHEEL") into $VENV"
"$PY" -m pip install -q --no-deps --force-reinstall --disable-pip-version-check "$WHEEL"

so="$(compgen -G "$SITE/_pjsua2*.so" | head -n1)"
[ -n "$so" ] || die "no _pjsua2*.so in $SITE after installing $WHEEL"
if ldd "$so" | grep 'not found' >&2; then
    die "$so has unresolved libraries (see above); the runtime needs libssl3 and libuuid1"
fi
(cd / && "$PY" -c '
import os, pjsua2
assert os.path.basename(pjsua2.__file__) == "pjsua2.py", pjsua2.__file__
assert pjsua2.UaConfig().maxCalls >= 512
') || die "the installed pjsua2 is not the source build; run: bash scripts/dev.sh setup --wheel to fall back"
echo "source $KEY" >"$MARKER"
install_gwmedia
log "pjsua2 $PJ_VERSION (source build, $("$PY" -c 'import pjsua2; print(pjsua2.UaConfig().maxCalls)') call slots) installed in $VENV"
