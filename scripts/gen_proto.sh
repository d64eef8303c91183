#!/usr/bin/env bash
# Regenerates the committed gRPC stubs from proto/ (tests/service/test_proto_stubs.py
# checks that the committed ones match).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.}
.venv/bin/python -m grpc_tools.protoc -I proto --python_out="$OUT" --grpc_python_out="$OUT" \
  proto/meanshift_proto/v1/service.proto
