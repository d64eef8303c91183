# One image for every role: coordinator, party node, CLI.
#   docker build -t secure-meanshift .                       (python:3.11-slim base, from an index)
#   scripts/docker-offline-build.sh                           (no registry: local base + wheelhouse)
ARG BASE=python:3.11-slim
FROM ${BASE}

# docker/wheels/ (made by scripts/docker-offline-build.sh) makes the build offline;
# without it pip uses the configured package index. No data, no keys in the image.
COPY docker/wheels /wheels/
COPY pyproject.toml README.md /src/
COPY secure_meanshift /src/secure_meanshift
COPY meanshift_proto /src/meanshift_proto
COPY meanshift_rpc /src/meanshift_rpc
COPY meanshift_cli /src/meanshift_cli
COPY coordinator /src/coordinator
COPY party_node /src/party_node
RUN set -eu; \
    python3 -m venv /opt/sms; \
    if ls /wheels/*.whl >/dev/null 2>&1; then SRC="--no-index --find-links /wheels"; PKG=secure-meanshift; \
    else SRC=""; PKG=/src; fi; \
    /opt/sms/bin/pip install -q $SRC torch==2.13.0; \
    /opt/sms/bin/pip install -q $SRC "$PKG"; \
    /opt/sms/bin/pip install -q $SRC --no-deps crypten==0.4.1; \
    /opt/sms/bin/python -c "from secure_meanshift._compat import import_crypten; import_crypten()"; \
    rm -rf /wheels /src /root/.cache

ENV PATH=/opt/sms/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 1000 sms 2>/dev/null || adduser --disabled-password --uid 1000 sms
USER sms
WORKDIR /home/sms
EXPOSE 50051 29500-29519
ENTRYPOINT ["secure-meanshift"]
CMD ["--help"]
