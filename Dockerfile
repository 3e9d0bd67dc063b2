# The gateway image: `gateway run` by default; the same image runs the portal simulator and the operator
# commands (`docker compose exec gateway gateway dlq list`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the wheel needs (no .venv, tests or caches in the build context copy).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip install . \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --create-home --home-dir /app gateway \
    && mkdir -p /app/state && chown gateway /app/state

WORKDIR /app
USER gateway

# Listen on every interface inside the container so Prometheus can scrape /metrics.
ENV GATEWAY_HTTP__HOST=0.0.0.0 \
    GATEWAY_HTTP__PORT=9400
EXPOSE 9400

# SIGTERM drains in-flight work within concurrency.drain_timeout_s (15 s): give the container more than that.
STOPSIGNAL SIGTERM
CMD ["gateway", "run"]
