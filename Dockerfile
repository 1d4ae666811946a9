# syntax=docker/dockerfile:1
#
# Two stages: "builder" resolves the pinned dependencies and builds the mlops
# wheel into a virtual environment; "runtime" is a clean slim image that only
# receives that venv. Build: docker build -t mlops:local .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Same path as in the runtime stage: console-script shebangs point into it.
RUN python -m venv "$VIRTUAL_ENV"

WORKDIR /build

# Dependencies first, so code changes do not invalidate this layer.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The package itself; the wheel bundles migrations/ as mlops/_migrations.
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip install --no-deps . \
    && mlops --help > /dev/null

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="mlops" \
      org.opencontainers.image.description="MLOps control plane API" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MLOPS_ENV=production \
    MLOPS_DATA_DIR=/var/lib/mlops

# Fixed, unprivileged UID/GID (the Kubernetes manifests use the same numbers).
RUN groupadd --system --gid "${APP_GID}" mlops \
    && useradd --system --uid "${APP_UID}" --gid mlops --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mlops \
    && install -d -o mlops -g mlops -m 0750 /var/lib/mlops

COPY --from=builder /opt/venv /opt/venv

# The data dir must be writable (compose mounts a named volume, Kubernetes an
# emptyDir there); everything else in the image stays read-only for the app.
WORKDIR /var/lib/mlops

USER ${APP_UID}:${APP_GID}

EXPOSE 8000

# slim has no curl: probe /health with the interpreter that is already there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

CMD ["mlops", "serve", "--host", "0.0.0.0", "--port", "8000"]
