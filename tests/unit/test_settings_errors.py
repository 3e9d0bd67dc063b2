"""Settings refuse every mistake with one line naming the setting: file, unknown names, values, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from adapters.national_portal.settings import PortalSettings
from gateway.settings import (
    GatewaySettings,
    InvalidSettings,
    InvalidSettingValues,
    KafkaSettings,
    gateway_namespace,
    known_variables,
    load_settings,
)
from tests.unit.settings_env import refused

pytestmark = pytest.mark.usefixtures("clean_environment")


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_load_and_case_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("gateway_log_level", "debug")
    monkeypatch.setenv("GATEWAY_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("GATEWAY_KAFKA__SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("GATEWAY_KAFKA__SASL_USERNAME", "gw")
    monkeypatch.setenv("GATEWAY_KAFKA__SASL_PASSWORD", "pw")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert (settings.kafka.security_protocol, settings.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_LOG_LEVEL": "LOUD"},
         "GATEWAY_LOG_LEVEL: must be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL' (got 'LOUD')"),
        ({"GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": "abc"},
         "GATEWAY_CONCURRENCY__MAX_IN_FLIGHT: must be a valid integer, unable to parse string as an integer "
         "(got 'abc')"),
        ({"GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": "0"},
         "GATEWAY_CONCURRENCY__MAX_IN_FLIGHT: must be greater than or equal to 1 (got '0')"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "TLS"},
         "GATEWAY_KAFKA__SECURITY_PROTOCOL: must be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL' (got 'TLS')"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "GATEWAY_KAFKA__SASL_MECHANISM": "GSSAPI"},
         "GATEWAY_KAFKA__SASL_MECHANISM: must be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512' (got 'GSSAPI')"),
        ({"GATEWAY_RETRY__TIERS_S": "[60,60]"},
         "GATEWAY_RETRY__TIERS_S: retry.tiers_s lists 60 s twice: list each delay once"),
        ({"GATEWAY_RETRY__TIERS_S": '[10, "x"]'},
         "GATEWAY_RETRY__TIERS_S[1]: must be a valid number, unable to parse string as a number (got 'x')"),
        ({"GATEWAY_HTTP__PORT": "99999"}, "GATEWAY_HTTP__PORT: must be less than or equal to 65535 (got '99999')"),
        ({"GATEWAY_LOG_JSON": "maybe"}, "GATEWAY_LOG_JSON: must be a valid boolean"),
        ({"GATEWAY_ADAPTERS": '["national_portal", "national_portal"]'},
         "GATEWAY_ADAPTERS: adapters lists national_portal more than once"),
        ({"GATEWAY_KAFKA": '{"security_protocol": "TLS"}'}, "GATEWAY_KAFKA (kafka.security_protocol): must be"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SSL", "GATEWAY_KAFKA__SSL_CAFILE": "/no/such/ca.pem"},
         "GATEWAY_KAFKA__SSL_CAFILE: Path does not point to a file (got '/no/such/ca.pem')"),
    ],
)
def test_a_bad_value_names_its_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    message = refused(monkeypatch, **env)
    assert message.startswith("invalid setting: ")
    assert expected in message


def test_value_errors_stay_pydantic_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert isinstance(caught.value, InvalidSettingValues)
    assert [e["loc"] for e in caught.value.errors()] == [("log_level",)]


def test_several_mistakes_are_all_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, GATEWAY_LOG_LEVEL="LOUD", GATEWAY_HTTP__PORT="x")
    assert message.startswith("2 invalid settings: ")
    assert "GATEWAY_LOG_LEVEL" in message and "GATEWAY_HTTP__PORT" in message


def test_a_non_json_list_names_the_variable_and_the_expected_form(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, GATEWAY_ADAPTERS="national_portal")
    assert message.startswith("GATEWAY_ADAPTERS: not valid JSON")
    assert 'expected JSON such as ["national_portal"]' in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GATEWAY_CONCURENCY__MAX_IN_FLIGHT", "did you mean GATEWAY_CONCURRENCY__MAX_IN_FLIGHT?"),
        ("GATEWAY_KAFKA_BOOTSTRAP_SERVERS", "did you mean GATEWAY_KAFKA__BOOTSTRAP_SERVERS?"),
        ("GATEWAY_HTTP_PORT", "did you mean GATEWAY_HTTP__PORT?"),
        ("GATEWAY_KAFKA__BOOTSTRAP_SERVER", "no key 'bootstrap_server' in section kafka"),
        ("GATEWAY_LOG_LEVEL__X", "log_level has no nested keys"),
        ("GATEWAY_QQQ__R", "sections: kafka, topics, concurrency, retry, circuit, http, feeds, followups"),
    ],
)
def test_an_unknown_gateway_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, name: str, expected: str) -> None:
    message = refused(monkeypatch, **{name: "1"})
    assert message.startswith(f"{name}: unknown setting")
    assert expected in message


def test_variables_that_are_not_the_gateways_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The portal adapter's own settings, the config file, the fault suite, the test suite's database.
    for name in ("GATEWAY_PORTAL_BASE_URL", "GATEWAY_PORTAL_PASSWORD", "GATEWAY_CONFIG", "GATEWAY_FAULTS",
                 "GATEWAY_TEST_PG_DSN", "GATEWAY_LOGLEVEL"):
        assert not gateway_namespace(name), name
        if name != "GATEWAY_CONFIG":
            monkeypatch.setenv(name, "x")
    assert load_settings().log_level == "INFO"


def test_no_adapter_prefix_falls_in_the_gateways_namespace() -> None:
    prefix = str(PortalSettings.model_config.get("env_prefix"))
    for field in PortalSettings.model_fields:
        assert not gateway_namespace(f"{prefix}{field}".upper())
    assert all(gateway_namespace(name) for name in known_variables())


def test_the_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = toml(tmp_path, 'log_level = "WARNING"\n[kafka]\ngroup_prefix = "file"\ninput_partitions = 3\n')
    monkeypatch.setenv("GATEWAY_KAFKA__GROUP_PREFIX", "env")
    settings = load_settings(config)
    assert (settings.log_level, settings.kafka.group_prefix, settings.kafka.input_partitions) == ("WARNING", "env", 3)
    assert "GATEWAY_CONFIG" not in os.environ  # --config is not leaked into the process environment


def test_gateway_config_names_the_file_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(toml(tmp_path, "[http]\nport = 9500\n")))
    assert GatewaySettings().http.port == 9500
    message = refused(monkeypatch, GATEWAY_CONFIG=str(tmp_path / "missing.toml"))
    assert message == f"GATEWAY_CONFIG {tmp_path / 'missing.toml'}: no such file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[concurency]\nmax_in_flight = 5\n", "concurency in {file}: unknown key (did you mean concurrency?)"),
        ("[kafka]\nbootstrap_server = 'x:1'\n", "kafka.bootstrap_server in {file}: unknown key (did you mean "
                                                 "bootstrap_servers?)"),
        ("portal_password = 'x'\n", "portal_password in {file}: unknown key (allowed: database_url, log_level"),
        ("[kafka]\nsecurity_protocol = 'TLS'\n", "kafka.security_protocol in {file}: must be 'PLAINTEXT', 'SSL'"),
        ("[retry]\ntiers_s = [60, 60]\n", "retry.tiers_s in {file}: retry.tiers_s lists 60 s twice"),
    ],
)
def test_a_mistake_in_the_file_names_the_key_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    config = toml(tmp_path, text)
    assert expected.format(file=config) in refused(monkeypatch, config)


def test_a_missing_or_malformed_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match=r"^--config .*missing.toml: no such file$"):
        load_settings(tmp_path / "missing.toml")
    message = refused(monkeypatch, toml(tmp_path, "log_level = \n"))
    assert message == f"--config {tmp_path / 'gateway.toml'}: not valid TOML: Invalid value (at line 1, column 13)"
    with pytest.raises(InvalidSettings, match="is a directory"):
        load_settings(tmp_path)


def test_secrets_are_secret_and_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="gw", sasl_password=SecretStr("hunter2")
    )
    assert isinstance(kafka.sasl_password, SecretStr)
    assert "hunter2" not in repr(kafka) and "hunter2" not in str(kafka.model_dump())
    settings = GatewaySettings(database_url="postgresql://gw:hunter2@db/gw")
    assert "hunter2" not in repr(settings)
    message = refused(monkeypatch, GATEWAY_DATABASE_URL="", GATEWAY_KAFKA__SASL_PASSWORD="hunter2")
    assert "hunter2" not in message
    assert "kafka.sasl_password set but kafka.security_protocol is PLAINTEXT" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "GATEWAY_KAFKA__SASL_USERNAME": "gw"},
         "kafka.security_protocol SASL_SSL needs kafka.sasl_mechanism, kafka.sasl_password"),
        ({"GATEWAY_KAFKA__SASL_MECHANISM": "PLAIN"},
         "kafka.sasl_mechanism set but kafka.security_protocol is PLAINTEXT: use SASL_PLAINTEXT or SASL_SSL"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "GATEWAY_KAFKA__SASL_MECHANISM": "PLAIN",
          "GATEWAY_KAFKA__SASL_USERNAME": "gw", "GATEWAY_KAFKA__SASL_PASSWORD": "pw",
          "GATEWAY_KAFKA__SSL_CAFILE": "/etc/hostname"},
         "kafka.ssl_cafile set but kafka.security_protocol is SASL_PLAINTEXT: use SSL or SASL_SSL"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SSL", "GATEWAY_KAFKA__SSL_CAFILE": "/etc/hostname"},
         "kafka.ssl_cafile /etc/hostname is not a PEM CA certificate file"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "SSL", "GATEWAY_KAFKA__SSL_KEYFILE": "/etc/hostname"},
         "kafka.ssl_keyfile and kafka.ssl_key_password need kafka.ssl_certfile"),
    ],
)
def test_security_settings_must_fit_together(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    message = refused(monkeypatch, **env)
    assert message.startswith("invalid setting: ")
    assert expected in message


def test_the_example_file_loads_and_names_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "gateway.example.toml"
    settings = load_settings(example)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    text = example.read_text()
    for name, info in GatewaySettings.model_fields.items():
        assert f"\n{name} = " in text or f"\n[{name}]\n" in text, name
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key in section.model_fields:
                assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{name}.{key}"
