# One image for every role: coordinator, party node, CLI (entry point `secure-meanshift`).
#   docker build -t secure-meanshift:latest .                 python:3.11-slim base, packages from the index
#   scripts/docker-offline-build.sh                           no registry: local base image + host wheelhouse
# No data and no keys are in the image: they arrive in volumes at run time.
ARG BASE=python:3.11-slim

# --- stage 1: torch (CPU), the project's dependencies and CrypTen in a venv --------------
# Rebuilt only when the wheelhouse or pyproject.toml change, so a source change
# costs seconds, not a torch install. The wheels stay in this stage.
FROM ${BASE} AS deps
# online builds only: where the CPU build of torch comes from (PyPI's Linux torch is the CUDA one)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# docker/wheels/ (filled by scripts/docker-offline-build.sh) makes the build offline;
# empty, pip uses the configured package index.
COPY docker/wheels /wheels/
COPY pyproject.toml /tmp/pyproject.toml
RUN set -eu; \
    python3 -m venv /opt/sms; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt; \
    if ls /wheels/*.whl >/dev/null 2>&1; then SRC="--no-index --find-links /wheels"; TORCH_SRC="$SRC"; \
    else SRC=""; TORCH_SRC="--index-url $TORCH_INDEX"; fi; \
    /opt/sms/bin/pip install -q --no-cache-dir $TORCH_SRC torch==2.13.0; \
    /opt/sms/bin/pip install -q --no-cache-dir $SRC -r /tmp/requirements.txt; \
    /opt/sms/bin/pip install -q --no-cache-dir $SRC --no-deps crypten==0.4.1; \
    find /opt/sms -name __pycache__ -prune -exec rm -rf {} +

# --- stage 2: the runtime image --------------------------------------------------------
FROM ${BASE}
COPY --from=deps /opt/sms /opt/sms
# the project itself: docker/dist/*.whl when built offline, else the sources below
COPY docker/dist /dist/
COPY pyproject.toml README.md /src/
COPY secure_meanshift /src/secure_meanshift
COPY meanshift_proto /src/meanshift_proto
COPY meanshift_rpc /src/meanshift_rpc
COPY meanshift_cli /src/meanshift_cli
COPY coordinator /src/coordinator
COPY party_node /src/party_node
RUN set -eu; \
    if ls /dist/*.whl >/dev/null 2>&1; then \
      /opt/sms/bin/pip install -q --no-cache-dir --no-index --no-deps /dist/secure_meanshift-*.whl; \
    else /opt/sms/bin/pip install -q --no-cache-dir --no-deps /src; fi; \
    /opt/sms/bin/python -c "from secure_meanshift.mpc._compat import import_crypten; import_crypten()"; \
    /opt/sms/bin/secure-meanshift --help >/dev/null; \
    rm -rf /dist /src /root/.cache; \
    useradd --create-home --uid 1000 sms 2>/dev/null || adduser --disabled-password --uid 1000 sms; \
    mkdir -p /state /party && chown sms:sms /state /party

# /state (coordinator's SQLite) and /party (a node's folder) belong to sms: a fresh
# named volume mounted there inherits that, so `-v sms-state:/state` just works.
ENV PATH=/opt/sms/bin:$PATH PYTHONUNBUFFERED=1
USER sms
WORKDIR /home/sms
# 50051: the coordinator's gRPC (mutual TLS); 29500-29519: a node's MPC rendezvous port range
EXPOSE 50051 29500-29519
ENTRYPOINT ["secure-meanshift"]
CMD ["--help"]
