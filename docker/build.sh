#!/usr/bin/env bash
# Build the gateway's container image from this checkout (docker/Dockerfile).
#
#   bash docker/build.sh [--engine docker|podman] [--tag NAME] [-- EXTRA BUILD ARGS...]
#
#   --engine   docker or podman (default: $GATEWAY_CONTAINER_ENGINE, else docker when its
#              daemon answers, else podman)
#   --tag      image name (default: gateway:latest, which docker/compose*.yaml run)
#   -- ...     passed to `ENGINE build` as they are, e.g. --build-arg GATEWAY_EXTRAS=agents,
#              --pull=never, --no-cache
#
# pjproject: the tarball scripts/build-pjsua2.sh would use ($PJPROJECT_TARBALL, else
# ../shared/vendor/pjproject-2.17.tar.gz beside the checkout, else the copy a previous
# `scripts/dev.sh setup` downloaded into ${GATEWAY_BUILD_CACHE:-~/.cache/gateway-pjsua2})
# goes to the build as the named context `pjproject` (a directory outside the checkout holding
# only that file); with none, the image's build stage downloads the release from GitHub.
# Either way the build checks its sha256. Needs BuildKit (Docker 23+) or podman 4.
# podman stores the image in docker format, which keeps its HEALTHCHECK.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE="${GATEWAY_CONTAINER_ENGINE:-}"
TAG=gateway:latest
PJ_NAME=pjproject-2.17.tar.gz
CACHE_ROOT="${GATEWAY_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gateway-pjsua2}"

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --engine) ENGINE="$2"; shift 2 ;;
        --engine=*) ENGINE="${1#--engine=}"; shift ;;
        --tag) TAG="$2"; shift 2 ;;
        --tag=*) TAG="${1#--tag=}"; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        die "neither a Docker daemon nor podman found: install one, or pass --engine"
    fi
fi
case "$ENGINE" in
    docker|podman) command -v "$ENGINE" >/dev/null 2>&1 || die "$ENGINE is not installed" ;;
    *) die "--engine must be docker or podman, not $ENGINE" ;;
esac

tarball=""
for candidate in "${PJPROJECT_TARBALL:-}" "$ROOT/../shared/vendor/$PJ_NAME" \
    "$CACHE_ROOT/downloads/$PJ_NAME"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
        tarball="$candidate"
        break
    fi
done
[ -z "${PJPROJECT_TARBALL:-}" ] || [ "$tarball" = "$PJPROJECT_TARBALL" ] \
    || die "PJPROJECT_TARBALL=$PJPROJECT_TARBALL: no such file"

args=(build -f "$ROOT/docker/Dockerfile" -t "$TAG")
[ "$ENGINE" = podman ] && args+=(--format docker)
context_dir=""
if [ -n "$tarball" ]; then
    # A directory of its own: the engine sends all of a context, and the file must have the
    # name the Dockerfile looks for.
    context_dir="$(mktemp -d "${TMPDIR:-/tmp}/gateway-pjproject.XXXXXX")"
    trap 'rm -rf "$context_dir"' EXIT
    cp "$tarball" "$context_dir/$PJ_NAME"
    args+=(--build-context "pjproject=$context_dir")
    log "pjproject from $tarball"
else
    log "no local pjproject tarball: the build downloads the release from GitHub"
fi

start=$SECONDS
log "$ENGINE ${args[*]} $* $ROOT"
"$ENGINE" "${args[@]}" "$@" "$ROOT"
log "built $TAG in $((SECONDS - start)) s"
