#!/usr/bin/env bash
# Builds the secure-meanshift image without pulling anything from a container
# registry, on a fresh machine or a warm one:
#   1. Debian's docker.io, docker-compose and debootstrap (installed if missing),
#      dockerd started if no engine answers, `docker compose` available;
#   2. a Debian bookworm base image (python3 3.11, like the torch wheel) made with
#      debootstrap and `docker import`;
#   3. a wheelhouse made on the host: torch==2.13.0 CPU (from the local disk),
#      the dependencies in pyproject.toml, crypten 0.4.1 (installed --no-deps);
#      plus the project's own wheel;
#   4. `docker build --build-arg BASE=<that base>`, no network inside the build.
# Big things are cached under $SMS_CACHE (default /var/cache/secure-meanshift):
# the base rootfs tarball and the wheelhouse; a warm rerun takes seconds. The
# build context is a temporary folder (SMS_BUILD_DIR=DIR keeps it there): the
# script writes nothing into the checkout.
#
#   scripts/docker-offline-build.sh            # -> image secure-meanshift:latest
#   SMS_REFRESH=1 scripts/docker-offline-build.sh   # rebuild base and wheelhouse
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SMS_CACHE:-/var/cache/secure-meanshift}
BASE_IMAGE=${SMS_BASE_IMAGE:-secure-meanshift-base:bookworm}
IMAGE=${SMS_IMAGE:-secure-meanshift:latest}
mkdir -p "$CACHE"
t0=$(date +%s)
log() { echo "[offline-build +$(( $(date +%s) - t0 ))s] $*"; }
if [ -n "${SMS_REFRESH:-}" ]; then
  rm -rf "$CACHE/base-rootfs.tar" "$CACHE/wheels"
  docker image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
fi

# 1. a Docker engine (Debian's docker.io), docker-compose, debootstrap
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  (setsid dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log; echo "dockerd did not start"; exit 1; }
fi
# `docker compose` (v2 syntax), with Debian's docker-compose v1 behind it if need be
scripts/install-compose-shim.sh

# 2. base image: Debian bookworm minbase + python3 (3.11)
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ ! -s "$CACHE/base-rootfs.tar" ]; then
    log "debootstrap bookworm (minbase) into $CACHE/rootfs (log: $CACHE/debootstrap.log)"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,libstdc++6,libgomp1,ca-certificates \
      bookworm "$CACHE/rootfs" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    rm -rf "$CACHE/rootfs/var/cache/apt/archives/"*.deb "$CACHE/rootfs/var/lib/apt/lists/"*
    tar -C "$CACHE/rootfs" -cf "$CACHE/base-rootfs.tar.part" .
    mv "$CACHE/base-rootfs.tar.part" "$CACHE/base-rootfs.tar"
    rm -rf "$CACHE/rootfs"
  fi
  log "docker import -> $BASE_IMAGE"
  docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' "$CACHE/base-rootfs.tar" "$BASE_IMAGE" >/dev/null
fi

# 3. wheelhouse (cp311 like bookworm's python3): torch from the local disk (pip's
#    find-links), the dependencies pinned by what pip resolves, crypten --no-deps.
#    Keyed by the dependency list: a change to pyproject.toml's dependencies
#    refreshes it; otherwise no network at all.
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || PY=python3.11
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "need a Python 3.11 on the host (set PYTHON=...) to build cp311 wheels"; exit 1; }
WH="$CACHE/wheels"
REQ=$("$PY" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
KEY=$(printf '%s\ncrypten==0.4.1\n' "$REQ" | sha256sum | cut -c1-16)
if [ ! -f "$WH/.complete-$KEY" ]; then
  log "building the wheelhouse in $WH"
  rm -rf "$WH.part" && mkdir -p "$WH.part"
  printf '%s\n' "$REQ" > "$WH.part/requirements.txt"
  # pip's index configuration on this machine is noisy about missing local mirrors
  "$PY" -m pip download -q --only-binary=:all: -d "$WH.part" torch==2.13.0 -r "$WH.part/requirements.txt" 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
  "$PY" -m pip download -q --only-binary=:all: -d "$WH.part" --no-deps crypten==0.4.1 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
  ls "$WH.part"/torch-2.13.0*.whl "$WH.part"/crypten-0.4.1*.whl >/dev/null \
    || { echo "wheelhouse incomplete: torch 2.13.0 or crypten 0.4.1 missing"; exit 1; }
  touch "$WH.part/.complete-$KEY"
  rm -rf "$WH" && mv "$WH.part" "$WH"
fi
# the build context: a temporary folder (or SMS_BUILD_DIR, a new or empty folder,
# kept), never the checkout: sources, wheelhouse and the project's fresh wheel
if [ -n "${SMS_BUILD_DIR:-}" ]; then
  CTX=$SMS_BUILD_DIR
else
  CTX=$(mktemp -d "${TMPDIR:-/tmp}/sms-build.XXXXXX")
  trap 'rm -rf "$CTX"' EXIT
fi
log "build context -> $CTX"
PYTHON="$PY" scripts/docker-context.sh "$WH" "$CTX"

# 4. the image
log "docker build --build-arg BASE=$BASE_IMAGE -> $IMAGE"
docker build -q --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" "$CTX" 2>&1 >/dev/null | { grep -vE "DEPRECATED: The legacy builder|buildx|docs.docker.com/go/buildx|^ *$" || true; }
test "${PIPESTATUS[0]}" -eq 0 || { echo "docker build failed"; exit 1; }
log "done: $IMAGE, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
