# syntax=docker/dockerfile:1
# Image of model build Jobs (slmops build: export, quantize, prune, evaluate, push).
# Build from the repository root, for one or several platforms:
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f operator/images/builder.Dockerfile -t ghcr.io/slmops/slmops-builder:0.1.0 .
# Release builds pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# The wheel is pure Python, so it is built once on the build machine's own platform.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/slmops ./operator/slmops
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Dependencies (onnxruntime, numpy, torch) have native wheels per platform, so they are
# installed on the target platform, into a virtualenv that the final stage copies whole.
FROM --platform=$TARGETPLATFORM ${PYTHON_IMAGE} AS install
# CPU-only torch: the CUDA build would add gigabytes that a CPU build step never uses.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/slmops \
 && /opt/slmops/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/slmops/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" \
      "$(ls /wheels/slmops-*.whl)[train]"

FROM --platform=$TARGETPLATFORM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="slmops-builder" \
      org.opencontainers.image.description="slmops: model build Jobs (slmops build: export, quantize, prune, evaluate, push)" \
      org.opencontainers.image.source="https://github.com/slmops/slmops" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=install /opt/slmops /opt/slmops
# The pods run with a read-only root filesystem: nothing may need to write outside /tmp
# (an emptyDir); pip compiled the bytecode at install time.
ENV PATH=/opt/slmops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532 is the conventional "nonroot" id of distroless images; the chart's
# securityContext (runAsNonRoot, runAsUser 65532) matches it.
USER 65532:65532
ENTRYPOINT ["slmops"]
CMD ["build", "--help"]
