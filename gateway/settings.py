"""Gateway settings, read from `GATEWAY_*` environment variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS
from gateway.retry_topics import validate_ladder

CONFIG_FILE_ENV = "GATEWAY_CONFIG"


class KafkaSettings(BaseModel):
    """Broker connection and topic layout."""

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]; required by `run`")
    input_partitions: int = Field(default=12, ge=1, description="partitions of the input topic at creation")
    replication_factor: int = Field(default=1, ge=1)
    group_prefix: str = "gateway"
    session_timeout_ms: int = 6000
    fetch_max_wait_ms: int = Field(
        default=10,
        ge=0,
        description="longest a fetch of the input topic waits for data; the embedded broker holds a fetch this "
        "long even when data arrives, so it adds up to this much latency there (docs/benchmarks.md: added_latency). "
        "Apache Kafka answers as soon as data arrives, so a longer wait there only saves idle polls",
    )
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    max_message_bytes: int = Field(default=1_000_000, description="bigger input is dead-lettered, as Kafka would")
    max_dead_letter_bytes: int = Field(
        default=8_000_000,
        description="largest dead letter written whole; a bigger original keeps a prefix plus its size and SHA-256",
    )


class TopicSettings(BaseModel):
    """Topic names; the defaults are the published contract, overridable for per-province prefixes."""

    input: str = DOSSIER_EVENTS
    results: str = SYNC_RESULTS


class ConcurrencySettings(BaseModel):
    """How much work runs at once."""

    max_in_flight: int = Field(default=500, ge=1, description="messages in flight per adapter")
    drain_timeout_s: float = 15.0
    commit_interval_s: float = 0.5


class RetrySettings(BaseModel):
    """In-process retries before a message is parked or dead-lettered."""

    attempts: int = Field(default=4, ge=1, description="in-process attempts before a message is parked")
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    tiers_s: list[float] = Field(
        default=[10.0, 60.0, 600.0],
        description="delays of the retry topics, strictly increasing, at most 10; after the last tier a message "
        "is dead-lettered. Changing it while messages are parked is checked at start-up (gateway.store.ladder)",
    )

    @field_validator("tiers_s")
    @classmethod
    def _usable_ladder(cls, value: list[float]) -> list[float]:
        # Refused at load, not when the pipeline first parks a message in a tier that shares a topic.
        return validate_ladder(value)


class CircuitSettings(BaseModel):
    """Per-partner circuit breaker."""

    failure_threshold: int = Field(default=5, ge=1, description="consecutive retryable failures that open it")
    open_s: float = Field(default=5.0, gt=0, description="wait before the first probe; doubles per failed probe")
    max_open_s: float = Field(default=60.0, gt=0)
    probe_limit: int = Field(default=1, ge=1, description="calls allowed at once while half-open")


class HttpSettings(BaseModel):
    """The operator endpoint serving /metrics and /health."""

    host: str = "127.0.0.1"
    port: int = 9400


class GatewaySettings(BaseSettings):
    """Everything the composition root needs; nested keys use `__` in env (GATEWAY_KAFKA__BOOTSTRAP_SERVERS)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field(default="sqlite+aiosqlite:///./state/gateway.db")
    log_level: str = "INFO"
    log_json: bool = True
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    concurrency: ConcurrencySettings = ConcurrencySettings()
    retry: RetrySettings = RetrySettings()
    circuit: CircuitSettings = CircuitSettings()
    http: HttpSettings = HttpSettings()
    adapters: list[str] = Field(default=["national_portal"], description="adapters this process runs")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file named by GATEWAY_CONFIG.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from env + optional TOML file; a missing file is an error, not a silent default."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    return GatewaySettings(**overrides)
