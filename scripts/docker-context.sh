#!/usr/bin/env bash
# Makes the image's build context in OUT (created; must not exist or be empty),
# never in the checkout: the Dockerfile, .dockerignore, the sources, the
# wheelhouse WHEELS (hard links when on the same filesystem, else copies) in
# docker/wheels and the project's own wheel, freshly built, in docker/dist.
#   scripts/docker-context.sh WHEELS OUT          (scripts/docker-offline-build.sh uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
WH=${1:?usage: docker-context.sh WHEELS OUT}
OUT=${2:?usage: docker-context.sh WHEELS OUT}
PY=${PYTHON:-python3}
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "docker-context.sh: $OUT exists and is not empty (give a new or empty folder)" >&2
  exit 2
fi
mkdir -p "$OUT/docker/wheels" "$OUT/docker/dist"
cp -rp Dockerfile .dockerignore pyproject.toml README.md secure_meanshift meanshift_proto \
  meanshift_rpc meanshift_cli coordinator party_node "$OUT"/
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
if ls "$WH"/*.whl >/dev/null 2>&1; then
  cp -al "$WH"/*.whl "$OUT/docker/wheels/" 2>/dev/null || cp -a "$WH"/*.whl "$OUT/docker/wheels/"
fi
# the project's wheel from a clean copy (its build files stay in that copy)
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
cp -rp "$OUT"/pyproject.toml "$OUT"/README.md "$OUT"/secure_meanshift "$OUT"/meanshift_proto \
  "$OUT"/meanshift_rpc "$OUT"/meanshift_cli "$OUT"/coordinator "$OUT"/party_node "$SRC"/
"$PY" -m pip wheel -q --no-deps -w "$OUT/docker/dist" "$SRC" 2>&1 \
  | grep -v "^WARNING: Location 'file:" || true
ls "$OUT"/docker/dist/secure_meanshift-*.whl >/dev/null \
  || { echo "docker-context.sh: the project wheel was not built" >&2; exit 1; }
