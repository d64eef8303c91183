#!/usr/bin/env bash
# This machine's Debian ships docker-compose v1 only and no registry serves the
# v2 plugin: install a tiny Docker CLI plugin so that `docker compose ...`
# (what the docs and CI use) runs `docker-compose ...`. Where the real v2
# plugin exists, this script leaves it alone.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then exit 0; fi
command -v docker-compose >/dev/null || { echo "docker-compose is not installed"; exit 1; }
dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
mkdir -p "$dir"
cat > "$dir/docker-compose" <<'SH'
#!/bin/sh
if [ "$1" = "docker-cli-plugin-metadata" ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"secure-meanshift","Version":"v1-shim","ShortDescription":"docker-compose v1 behind docker compose"}'
  exit 0
fi
shift   # the plugin name ("compose")
exec docker-compose "$@"
SH
chmod +x "$dir/docker-compose"
