#!/usr/bin/env bash
# Creates .venv/ in the project root and installs the project into it.
# CrypTen 0.4.1 cannot be installed with its declared dependencies (see
# ../shared/docs/environment.md), so it is installed with --no-deps after the
# packages it really needs; torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps crypten==0.4.1
# The project is installed editable, so pip compiles none of its modules; where
# PYTHONDONTWRITEBYTECODE is set (this machine's image sets it) Python would
# then compile them from source in every process of every run: about 0.4 s of
# CPU per simulator run (the caller and the fork server), 0.4 s of its wall time.
.venv/bin/python -m compileall -q secure_meanshift coordinator party_node meanshift_proto \
  meanshift_rpc meanshift_cli >/dev/null
.venv/bin/python -c "from secure_meanshift.mpc._compat import import_crypten; import_crypten()" \
  && echo "setup: ok (.venv/bin/secure-meanshift)"
