# ecs-observer: the image the service template runs.
# Build:  docker build -t ecs-observer .
# Run:    docker run --rm -e ECS_OBSERVER_QUEUE_URL=... -e PREFECT_API_URL=... -e PREFECT_API_KEY=... ecs-observer

# The base image by digest, the same in both stages (the venv built in one runs on the other's Python):
# python:3.11-slim-bookworm for linux/amd64 as built 2026-08-25 (Python 3.11.16), the platform the service
# template runs. The tag stays for readers; the digest decides. Refreshing it: docs/deploy.md.

# --- build: the wheel, and every dependency from the hashed lock ---
FROM python:3.11-slim-bookworm@sha256:2fc9207f64226cb05ac317cee0bab6fa55a9ea311ce5a086baddd4b4a83c2d3c AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock requirements-build.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
# The build backend too comes pinned with hashes, in a venv of its own, and the wheel is built with it alone.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY ecs_observer ./ecs_observer
COPY infra ./infra
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-deps /dist/*.whl

# --- run: slim, no compilers, not root ---
FROM python:3.11-slim-bookworm@sha256:2fc9207f64226cb05ac317cee0bab6fa55a9ea311ce5a086baddd4b4a83c2d3c
LABEL org.opencontainers.image.title="ecs-observer" \
      org.opencontainers.image.description="Forwards AWS ECS task state changes of Prefect flow runs to the Prefect events API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# The service template runs the container as this uid, with a read-only root filesystem.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin observer
USER 10001
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["ecs-observer", "healthcheck"]
ENTRYPOINT ["ecs-observer"]
CMD ["run"]
