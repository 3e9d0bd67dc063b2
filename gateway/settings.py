"""Gateway settings, read from `GATEWAY_*` environment variables and an optional TOML file.

Every mistake is refused at load with one line that names the setting (the variable or the file's key)
and what is allowed: a missing or malformed file, an unknown key in the file, an unknown `GATEWAY_*`
variable, a value that does not parse or is out of range. `load_settings` raises `InvalidSettings` for the
first three kinds and `InvalidSettingValues` (a pydantic `ValidationError`) for values; `str()` of either
is that one line, so a command prints it and exits 2.

Which `GATEWAY_*` variables are the gateway's, and so an error when unknown (`gateway_namespace`):

- `GATEWAY_<FIELD>` for a top-level field (`GATEWAY_LOG_LEVEL`, `GATEWAY_ADAPTERS`, `GATEWAY_KAFKA` as JSON);
- every name holding the nested delimiter `__` (`GATEWAY_KAFKA__BOOTSTRAP_SERVERS`, and the typo
  `GATEWAY_CONCURENCY__MAX_IN_FLIGHT`);
- `GATEWAY_<SECTION>_<...>` with a single `_` after a section name (`kafka`, `topics`, `concurrency`,
  `retry`, `circuit`, `http`, `feeds`, `followups`): the `__` was meant (`GATEWAY_KAFKA_BOOTSTRAP_SERVERS`).

Anything else under `GATEWAY_` is not read here and not checked: the adapters' own settings
(`GATEWAY_PORTAL_*`, read by `adapters/national_portal/settings.py`; an adapter's prefix must not start
with a section name), `GATEWAY_CONFIG`, the fault suite's `GATEWAY_FAULTS`, the test suite's
`GATEWAY_TEST_PG_DSN`. Names are matched without regard to case, as pydantic-settings does.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import ssl
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, commands_topic, partner_events_topic
from gateway.retry_topics import validate_ladder

CONFIG_FILE_ENV = "GATEWAY_CONFIG"
ENV_PREFIX = "GATEWAY_"
NESTED_DELIMITER = "__"

# Values never repeated in an error message (a database URL may hold a password).
SECRET_FIELDS = frozenset({"database_url", "sasl_password", "ssl_key_password"})


class InvalidSettings(ValueError):
    """The config file or a `GATEWAY_*` variable cannot be read; the message is one line naming it."""


class InvalidSettingValues(ValidationError):
    """Settings values pydantic refused; `str()` is one line naming each setting and what is allowed.

    A `ValidationError` still (`errors()` lists them), so callers that catch pydantic's error keep working.
    """

    summary: str = ""

    def __str__(self) -> str:
        return self.summary


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)]
SecurityProtocol = Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)]
SaslMechanism = Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(_upper)]


class _Section(BaseModel):
    # A key the gateway does not know is a typo or a setting of another version: refused, never ignored.
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    """Broker connection, security and topic layout."""

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]; required by `run`")
    connect_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="how long `gateway run` waits at start for the broker to answer before it exits 1",
    )
    input_partitions: int = Field(default=12, ge=1, description="partitions of the input topic at creation")
    replication_factor: int = Field(default=1, ge=1)
    group_prefix: str = "gateway"
    session_timeout_ms: int = Field(default=6000, ge=1)
    fetch_max_wait_ms: int = Field(
        default=10,
        ge=0,
        description="longest a fetch of the input topic waits for data; the embedded broker holds a fetch this "
        "long even when data arrives, so it adds up to this much latency there (docs/benchmarks.md: added_latency). "
        "Apache Kafka answers as soon as data arrives, so a longer wait there only saves idle polls",
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = Field(default=None, description="with SASL_PLAINTEXT or SASL_SSL")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: FilePath | None = Field(
        default=None, description="PEM file of the CA(s) the broker's certificate must chain to (default: system CAs)"
    )
    ssl_certfile: FilePath | None = Field(default=None, description="PEM client certificate, for brokers asking one")
    ssl_keyfile: FilePath | None = Field(default=None, description="PEM private key of the client certificate")
    ssl_key_password: SecretStr | None = Field(default=None, description="password of ssl_keyfile, if encrypted")
    ssl_check_hostname: bool = Field(default=True, description="the broker's certificate must name its host")
    max_message_bytes: int = Field(
        default=1_000_000, ge=1, description="bigger input is dead-lettered, as Kafka would"
    )
    max_dead_letter_bytes: int = Field(
        default=8_000_000,
        ge=1,
        description="largest dead letter written whole; a bigger original keeps a prefix plus its size and SHA-256",
    )

    @model_validator(mode="after")
    def _coherent_security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        sasl_given = {
            "sasl_mechanism": self.sasl_mechanism, "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password,
        }
        if sasl:
            missing = [f"kafka.{name}" for name, value in sasl_given.items() if not value]
            if missing:
                raise ValueError(
                    f"kafka.security_protocol {self.security_protocol} needs {', '.join(missing)} "
                    "(mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )
        else:
            stray = [f"kafka.{name}" for name, value in sasl_given.items() if value]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} set but kafka.security_protocol is {self.security_protocol}: "
                    "use SASL_PLAINTEXT or SASL_SSL, or remove them"
                )
        tls_given = {
            "ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile,
            "ssl_key_password": self.ssl_key_password,
        }
        if not tls:
            stray = [f"kafka.{name}" for name, value in tls_given.items() if value]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} set but kafka.security_protocol is {self.security_protocol}: "
                    "use SSL or SASL_SSL, or remove them"
                )
            return self
        if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
            raise ValueError("kafka.ssl_keyfile and kafka.ssl_key_password need kafka.ssl_certfile (the certificate)")
        self._check_tls_files()
        return self

    def _check_tls_files(self) -> None:
        """Load the CA and client files once now, so a wrong file is a settings error, not a failed connect."""
        context = ssl.create_default_context()
        if self.ssl_cafile:
            try:
                context.load_verify_locations(cafile=self.ssl_cafile)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"kafka.ssl_cafile {self.ssl_cafile} is not a PEM CA certificate file ({exc})"
                ) from None
        if self.ssl_certfile:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"kafka.ssl_certfile {self.ssl_certfile} with kafka.ssl_keyfile {self.ssl_keyfile} is not a "
                    f"PEM certificate and its private key (or kafka.ssl_key_password is wrong) ({exc})"
                ) from None


class TopicSettings(_Section):
    """Topic names; the defaults are the published contract, overridable for per-province prefixes."""

    input: str = Field(default=DOSSIER_EVENTS, min_length=1)
    results: str = Field(default=SYNC_RESULTS, min_length=1)
    commands: str = Field(
        default=commands_topic("{partner}"), description="each partner's commands topic; {partner} is its name"
    )
    partner_events: str = Field(
        default=partner_events_topic("{partner}"),
        description="each partner's events topic (its events and the answers to its commands); {partner} is its name",
    )

    @field_validator("commands", "partner_events")
    @classmethod
    def _per_partner(cls, value: str) -> str:
        if value.count("{partner}") != 1 or value.replace("{partner}", "x").count("{") or "}" in value.replace(
            "{partner}", ""
        ):
            raise ValueError("must contain {partner} once (where the partner's name goes) and no other braces")
        return value


class ConcurrencySettings(_Section):
    """How much work runs at once."""

    max_in_flight: int = Field(default=500, ge=1, description="messages in flight per adapter")
    drain_timeout_s: float = Field(default=15.0, ge=0)
    commit_interval_s: float = Field(default=0.5, gt=0)


class RetrySettings(_Section):
    """In-process retries before a message is parked or dead-lettered."""

    attempts: int = Field(default=4, ge=1, description="in-process attempts before a message is parked")
    backoff_initial_s: float = Field(default=0.2, ge=0)
    backoff_max_s: float = Field(default=5.0, ge=0)
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


class CircuitSettings(_Section):
    """Per-partner circuit breaker."""

    failure_threshold: int = Field(default=5, ge=1, description="consecutive retryable failures that open it")
    open_s: float = Field(default=5.0, gt=0, description="wait before the first probe; doubles per failed probe")
    max_open_s: float = Field(default=60.0, gt=0)
    probe_limit: int = Field(default=1, ge=1, description="calls allowed at once while half-open")


class HttpSettings(_Section):
    """The operator endpoint serving /metrics and /health."""

    host: str = "127.0.0.1"
    port: int = Field(default=9400, ge=0, le=65535, description="0: any free port")


class FeedSettings(_Section):
    """Pulled feeds (gateway.feeds): how often each feed is polled, how big a page is, who may poll it.

    The lease is renewed every lease_s / 3 by a task of its own, so it does not depend on interval_s or on how
    long a page takes: a poll every minute with a 15 s lease is fine. lease_s bounds the failover instead: a
    process that dies (or is cut off from the database) is replaced within about lease_s * 4 / 3.
    """

    interval_s: float = Field(
        default=5.0, gt=0, description="pause after a page that was not full, before the feed is polled again"
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="records asked for per page")
    lease_s: float = Field(
        default=15.0,
        ge=1.0,
        description="how long a poller's claim on a feed lasts unless renewed (every lease_s / 3); another "
        "process takes the feed over this long after the holder died, at once after a clean stop",
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, description="first wait after a failed poll; doubles per failure (jittered) ..."
    )
    backoff_max_s: float = Field(default=60.0, gt=0, description="... up to this")

    @model_validator(mode="after")
    def _backoff_grows(self) -> FeedSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"feeds.backoff_max_s ({self.backoff_max_s}) must be at least "
                f"feeds.backoff_initial_s ({self.backoff_initial_s})"
            )
        return self


class FollowUpSettings(_Section):
    """Durable follow-ups (gateway.followups): how often due rows are looked for, how many run at once, how long
    a claim lasts, and the backoff between runs of one row that answered "not yet" or failed retryably.

    claim_s must exceed the longest a run can take: the partner's timeout (and its retries inside the client)
    plus publishing the run's events. A claim that lapses while its run is still going lets another process
    claim and run the row too (its completion is fenced off, but the partner was asked twice). A claim that
    waited at an open circuit for half of claim_s is given back unrun.
    """

    scan_interval_s: float = Field(
        default=1.0, gt=0, description="how often each runner looks for due follow-ups when it is idle"
    )
    batch: int = Field(
        default=50, ge=1, le=1000,
        description="most rows claimed by one statement (a scan claims no more than its free concurrency slots)",
    )
    concurrency: int = Field(default=8, ge=1, le=1000, description="follow-ups run at once per runner (adapter)")
    claim_s: float = Field(
        default=60.0,
        ge=1.0,
        description="how long a runner holds a claimed row; must exceed the partner's timeout (plus publishing): "
        "after it another process may run the row; a killed runner's rows run again this long after it died",
    )
    backoff_initial_s: float = Field(
        default=30.0, gt=0,
        description="wait after a run that answered not yet or failed retryably; doubles per attempt (jittered) ...",
    )
    backoff_max_s: float = Field(default=3600.0, gt=0, description="... up to this (never past the row's deadline)")

    @model_validator(mode="after")
    def _backoff_grows(self) -> FollowUpSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"followups.backoff_max_s ({self.backoff_max_s}) must be at least "
                f"followups.backoff_initial_s ({self.backoff_initial_s})"
            )
        return self


class ReplySettings(_Section):
    """Reply topics of request/reply adapters (the population database): a request names its reply topic, which
    must start with `topic_prefix` (so a request cannot make the gateway write to any other topic). The gateway
    creates a missing reply topic on its first reply, with `partitions` and a short retention: a reply carries
    personal data and is read at once."""

    topic_prefix: str = Field(
        default="onestop.replies.", pattern=r"^[A-Za-z0-9._-]{3,100}$",
        description="every reply topic a request names must start with this",
    )
    retention_ms: int = Field(
        default=3_600_000, ge=60_000, le=7 * 86_400_000,
        description="retention.ms of the reply topics the gateway creates (default 1 h)",
    )
    partitions: int = Field(default=1, ge=1, le=100, description="partitions of a reply topic the gateway creates")
class InboundSettings(_Section):
    """The public listener partners call back on (gateway.inbound): never the operator endpoint, so /metrics and
    health stay private. It starts only when an adapter has callback routes."""

    host: str = "127.0.0.1"
    port: int = Field(default=9500, ge=0, le=65535, description="0: any free port")
    max_body_bytes: int = Field(
        default=65_536, ge=256, le=16 * 1024 * 1024, description="a longer body is refused unread (413)"
    )
    read_timeout_s: float = Field(default=10.0, gt=0, description="a body not read within this is refused (408)")
    durable_timeout_s: float = Field(
        default=5.0, gt=0, description="recording and publishing a callback longer than this answers 503 (retry)"
    )
    allow_from: list[str] = Field(
        default=[], description="source networks allowed to call (CIDR, e.g. 203.0.113.0/24); empty: any"
    )

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (CIDR, e.g. 203.0.113.0/24)") from None
        return value


class GatewaySettings(BaseSettings):
    """Everything the composition root needs; nested keys use `__` in env (GATEWAY_KAFKA__BOOTSTRAP_SERVERS)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER, extra="forbid")

    database_url: str = Field(default="sqlite+aiosqlite:///./state/gateway.db", min_length=1, repr=False)
    log_level: LogLevel = "INFO"
    log_json: bool = True
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    concurrency: ConcurrencySettings = ConcurrencySettings()
    retry: RetrySettings = RetrySettings()
    circuit: CircuitSettings = CircuitSettings()
    http: HttpSettings = HttpSettings()
    feeds: FeedSettings = FeedSettings()
    followups: FollowUpSettings = FollowUpSettings()
    replies: ReplySettings = ReplySettings()
    inbound: InboundSettings = InboundSettings()
    adapters: list[str] = Field(default=["national_portal"], description="adapters this process runs")

    @field_validator("adapters")
    @classmethod
    def _each_adapter_once(cls, value: list[str]) -> list[str]:
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"adapters lists {', '.join(twice)} more than once: list each adapter once")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file (--config or GATEWAY_CONFIG).
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvironmentSource(settings_cls)]
        config = _config_file()
        if config is not None:
            sources.append(_TomlSource(settings_cls, config))
        return tuple(sources)


# --- where settings come from --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    """The TOML file to read and how it was named (for messages: `--config` or `GATEWAY_CONFIG`)."""

    path: Path
    named_by: str


_explicit_config: ContextVar[ConfigFile | None] = ContextVar("gateway_config_file", default=None)


def _config_file() -> ConfigFile | None:
    explicit = _explicit_config.get()
    if explicit is not None:
        return explicit
    path = os.environ.get(CONFIG_FILE_ENV)
    return ConfigFile(Path(path), CONFIG_FILE_ENV) if path else None


def read_config_file(config: ConfigFile) -> dict[str, Any]:
    """The TOML file's content; InvalidSettings naming the file when it is missing or not TOML."""
    where = f"{config.named_by} {config.path}"
    try:
        text = config.path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InvalidSettings(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InvalidSettings(f"{where}: is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise InvalidSettings(f"{where}: not UTF-8 text, so not a TOML file") from None
    except OSError as exc:
        raise InvalidSettings(f"{where}: cannot be read ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSettings(f"{where}: not valid TOML: {exc}") from None


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], config: ConfigFile) -> None:
        super().__init__(settings_cls)
        self._data = read_config_file(config)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_complex(annotation: Any) -> bool:
    """A field whose environment value is JSON (a list, a dict, a section), as in pydantic-settings."""
    if _section_model(annotation) is not None:
        return True
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset, dict):
        return True
    return origin is not None and origin is not Literal and any(_is_complex(arg) for arg in get_args(annotation))


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: model
        for name, info in GatewaySettings.model_fields.items()
        if (model := _section_model(info.annotation)) is not None
    }


def gateway_namespace(name: str) -> bool:
    """Whether the environment variable `name` is one of the gateway's own (see the module docstring)."""
    upper = name.upper()
    if not upper.startswith(ENV_PREFIX):
        return False
    rest = upper[len(ENV_PREFIX):].lower()
    if rest in GatewaySettings.model_fields or NESTED_DELIMITER in rest:
        return True
    return any(rest.startswith(section + "_") for section in _sections())


def known_variables() -> list[str]:
    """Every `GATEWAY_*` name that sets one field (for suggestions)."""
    names = []
    for name, info in GatewaySettings.model_fields.items():
        section = _section_model(info.annotation)
        if section is None:
            names.append(f"{ENV_PREFIX}{name.upper()}")
        else:
            names.extend(f"{ENV_PREFIX}{name.upper()}{NESTED_DELIMITER}{sub.upper()}" for sub in section.model_fields)
    return names


def _resolve(name: str) -> tuple[tuple[str, ...], FieldInfo] | str:
    """The field path a gateway variable sets, or why it sets none (one clause, for the message)."""
    parts = name.upper()[len(ENV_PREFIX):].lower().split(NESTED_DELIMITER)
    model: type[BaseModel] = GatewaySettings
    path: list[str] = []
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return f"no key {part!r} in section {'.'.join(path)}" if path else f"no setting or section {part!r}"
        path.append(part)
        if i == len(parts) - 1:
            return tuple(path), info
        nested = _section_model(info.annotation)
        if nested is None:
            return f"{'.'.join(path)} has no nested keys"
        model = nested
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns on its last part


def _suggest(name: str) -> str:
    upper = name.upper()
    known = known_variables()
    rest = upper[len(ENV_PREFIX):]
    for section in _sections():
        head = section.upper() + "_"
        if rest.startswith(head) and not rest.startswith(head + "_"):
            candidate = f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{rest[len(head):]}"
            if candidate in known:
                return candidate
    close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
    return close[0] if close else ""


def unknown_variable_message(name: str) -> str | None:
    """None if `name` sets a gateway field or is not the gateway's; else one clause saying what is wrong."""
    if not gateway_namespace(name):
        return None
    resolved = _resolve(name)
    if not isinstance(resolved, str):
        return None
    suggestion = _suggest(name)
    hint = f"did you mean {suggestion}?" if suggestion else f"sections: {', '.join(_sections())}; nested keys use '__'"
    return f"{name}: unknown setting, {resolved} ({hint})"


def _json_hint(path: tuple[str, ...], info: FieldInfo) -> str:
    if _section_model(info.annotation) is not None:
        return 'a JSON object such as {"key": "value"}'
    default = info.default
    example = json.dumps(default) if isinstance(default, list | dict) and default else "[...]"
    return f"JSON such as {example}"


def environment_values(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The gateway's variables as nested settings values, and which variable set each path.

    InvalidSettings (one line, every offender) for unknown gateway variables and undecodable JSON values.
    """
    values: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    # Whole sections (GATEWAY_KAFKA='{...}') first, so that single keys (GATEWAY_KAFKA__...) override them.
    ours = sorted((name for name in environ if gateway_namespace(name)), key=lambda n: (n.count("__"), n.upper()))
    for name in ours:
        resolved = _resolve(name)
        if isinstance(resolved, str):
            problems.append(unknown_variable_message(name) or name)
            continue
        path, info = resolved
        raw = environ[name]
        value: Any = raw
        if _is_complex(info.annotation):
            try:
                value = json.loads(raw)
            except ValueError as exc:
                problems.append(f"{name}: not valid JSON ({exc.args[0] if exc.args else exc}); expected "
                                f"{_json_hint(path, info)}")
                continue
        target = values
        for part in path[:-1]:
            nested = target.get(part)
            if not isinstance(nested, dict):
                nested = target[part] = {}
            target = nested
        existing = target.get(path[-1])
        if isinstance(existing, dict) and isinstance(value, dict):
            existing.update(value)
        else:
            target[path[-1]] = value
        origin[path] = name.upper()
    if problems:
        raise InvalidSettings("; ".join(problems))
    return values, origin


class _EnvironmentSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        values, _ = environment_values(os.environ)
        return values


# --- one line per mistake ------------------------------------------------------------------------------------


def _model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = GatewaySettings
    for part in path:
        info = model.model_fields.get(str(part))
        nested = _section_model(info.annotation) if info is not None else None
        if nested is None:
            return None
        model = nested
    return model


def _in_file(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _where(loc: tuple[str, ...], origin: Mapping[tuple[str, ...], str], config: ConfigFile | None,
           data: Mapping[str, Any]) -> str:
    dotted = ".".join(loc) or "settings"
    for end in range(len(loc), 0, -1):
        variable = origin.get(loc[:end])
        if variable is not None:
            return variable if end == len(loc) else f"{variable} ({dotted})"
    if config is not None and loc and _in_file(data, loc):
        return f"{dotted} in {config.path}"
    return dotted


def _shown(value: Any) -> str:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        text = repr(value)
        return f" (got {text})" if len(text) <= 60 else f" (got {text[:57]}...')"
    return ""


def _what(error: Mapping[str, Any]) -> str:
    kind, message, loc = error["type"], str(error["msg"]), tuple(error["loc"])
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        return f"unknown key (did you mean {close[0]}?)" if close else f"unknown key (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required"
    for prefix, replacement in (("Input should be ", "must be "), ("Value error, ", ""), ("Assertion failed, ", "")):
        if message.startswith(prefix):
            message = replacement + message[len(prefix):]
    secret = any(str(part) in SECRET_FIELDS for part in loc)
    shown = "" if secret or kind in ("value_error", "model_type", "dict_type") else _shown(error.get("input"))
    return message + shown


def describe(exc: ValidationError, environ: Mapping[str, str] | None = None,
             config: ConfigFile | None = None) -> str:
    """One line for every error of a settings ValidationError, each naming the variable or the file key."""
    environ = os.environ if environ is None else environ
    try:
        _, origin = environment_values(environ)
    except InvalidSettings:
        origin = {}
    data: Mapping[str, Any] = {}
    if config is not None:
        try:
            data = read_config_file(config)
        except InvalidSettings:
            data = {}
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        field_loc = tuple(part for part in loc if not part.isdigit())  # list items: the list's setting
        if error["type"] == "value_error" and _model_at(field_loc) is not None:
            lines.append(_what(error))  # a section's own check names every setting it involves
            continue
        where = _where(field_loc, origin, config, data)
        index = "".join(f"[{part}]" for part in loc if part.isdigit())
        lines.append(f"{where}{index}: {_what(error)}")
    prefix = "invalid setting" if len(lines) == 1 else f"{len(lines)} invalid settings"
    return f"{prefix}: " + "; ".join(lines)


def _invalid_values(exc: ValidationError, config: ConfigFile | None) -> InvalidSettingValues:
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError(str(e["type"]), str(e["msg"])), "loc": tuple(e["loc"]), "input": e.get("input")}
        for e in exc.errors()
    ]
    error = InvalidSettingValues.from_exception_data(exc.title, details)
    error.summary = describe(exc, config=config)
    return error


@contextmanager
def _reading(config: ConfigFile | None) -> Iterator[None]:
    token = _explicit_config.set(config)
    try:
        yield
    finally:
        _explicit_config.reset(token)


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from env + optional TOML file (`config_file`, else GATEWAY_CONFIG).

    Raises InvalidSettings (file, unknown names, undecodable values) or InvalidSettingValues (values refused),
    both ValueErrors whose message is one line.
    """
    config = ConfigFile(config_file, "--config") if config_file is not None else _config_file()
    if config is not None:
        read_config_file(config)  # a missing or malformed file is an error, not a silent default
    with _reading(config):
        try:
            return GatewaySettings(**overrides)
        except ValidationError as exc:
            raise _invalid_values(exc, config) from None


__all__ = [
    "CONFIG_FILE_ENV",
    "CircuitSettings",
    "ConcurrencySettings",
    "ConfigFile",
    "FeedSettings",
    "FollowUpSettings",
    "GatewaySettings",
    "HttpSettings",
    "InvalidSettingValues",
    "InvalidSettings",
    "KafkaSettings",
    "RetrySettings",
    "TopicSettings",
    "describe",
    "environment_values",
    "gateway_namespace",
    "load_settings",
    "unknown_variable_message",
]
