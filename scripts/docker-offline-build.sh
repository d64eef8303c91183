#!/usr/bin/env bash
# Builds the secure-meanshift image without pulling anything from a container
# registry: a Debian bookworm base made with debootstrap and `docker import`,
# and a wheelhouse built on the host (torch==2.13.0 CPU, the project, its
# dependencies, crypten --no-deps). Caches under $SMS_CACHE (default
# /var/cache/secure-meanshift), so a second run takes seconds.
#
#   scripts/docker-offline-build.sh            # -> image secure-meanshift:latest
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SMS_CACHE:-/var/cache/secure-meanshift}
BASE_IMAGE=${SMS_BASE_IMAGE:-secure-meanshift-base:bookworm}
IMAGE=${SMS_IMAGE:-secure-meanshift:latest}
mkdir -p "$CACHE"
log() { echo "[offline-build] $*"; }

# 1. a Docker engine (Debian's docker.io), docker-compose, debootstrap
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start (see /var/log/dockerd.log)"; exit 1; }
fi
# `docker compose` (v2 syntax) with Debian's docker-compose v1 behind it
scripts/install-compose-shim.sh

# 2. base image: Debian bookworm (python3 3.11, like the host's torch wheel)
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ ! -s "$CACHE/base-rootfs.tar" ]; then
    log "debootstrap bookworm (minbase) into $CACHE/rootfs"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,libstdc++6,libgomp1,ca-certificates \
      bookworm "$CACHE/rootfs" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    rm -rf "$CACHE/rootfs/var/cache/apt/archives/"*.deb "$CACHE/rootfs/var/lib/apt/lists/"*
    tar -C "$CACHE/rootfs" -cf "$CACHE/base-rootfs.tar" .
    rm -rf "$CACHE/rootfs"
  fi
  log "docker import -> $BASE_IMAGE"
  docker import "$CACHE/base-rootfs.tar" "$BASE_IMAGE" >/dev/null
fi

# 3. wheelhouse: everything the image installs, built on this host
WH="$CACHE/wheels"
mkdir -p "$WH"
if ! ls "$WH"/torch-2.13.0*.whl >/dev/null 2>&1 || ! ls "$WH"/crypten-0.4.1*.whl >/dev/null 2>&1; then
  log "building the wheelhouse in $WH"
  PY=${PYTHON:-python3}
  "$PY" -m pip download -q -d "$WH" torch==2.13.0
  "$PY" -m pip download -q -d "$WH" --no-deps crypten==0.4.1
fi
rm -f "$WH"/secure_meanshift-*.whl
python3 -m pip wheel -q -w "$WH" --find-links "$WH" . "torch==2.13.0"
# the build context gets hard links (same filesystem) or copies
find docker/wheels -name '*.whl' -delete
cp -al "$WH"/*.whl docker/wheels/ 2>/dev/null || cp -a "$WH"/*.whl docker/wheels/

# 4. the image
log "docker build -> $IMAGE"
docker build -q --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" . >/dev/null
log "done: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
