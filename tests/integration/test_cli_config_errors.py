"""A bad configuration ends the real `gateway` console script with one line, exit 2; a broker that does not
answer with one line, exit 1. Never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GATEWAY = Path(sys.executable).parent / "gateway"
if not GATEWAY.exists():  # pragma: no cover - a venv without the script on that path
    GATEWAY = Path(shutil.which("gateway") or "gateway")

CONFIGURATION, UNREACHABLE = 2, 1


def gateway(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `gateway ARGS` in tmp_path with no GATEWAY_* but `env`; return (exit code, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}
    # No COLUMNS: a one-line message must not depend on the terminal's width.
    environ.pop("COLUMNS", None)
    environ.update(NO_COLOR="1", GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    environ.update(env or {})
    done = subprocess.run(
        [str(GATEWAY), *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, done.stderr


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


BROKER = {"GATEWAY_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "GATEWAY_KAFKA__CONNECT_TIMEOUT_S": "1"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": "abc"},
         "error: invalid setting: GATEWAY_CONCURRENCY__MAX_IN_FLIGHT: must be a valid integer, unable to parse "
         "string as an integer (got 'abc')"),
        ({"GATEWAY_ADAPTERS": "national_portal"},
         'error: GATEWAY_ADAPTERS: not valid JSON (Expecting value: line 1 column 1 (char 0)); expected JSON such '
         'as ["national_portal"]'),
        ({"GATEWAY_LOG_LEVEL": "LOUD"},
         "error: invalid setting: GATEWAY_LOG_LEVEL: must be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL' "
         "(got 'LOUD')"),
        ({"GATEWAY_KAFKA__SECURITY_PROTOCOL": "TLS"},
         "error: invalid setting: GATEWAY_KAFKA__SECURITY_PROTOCOL: must be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or "
         "'SASL_SSL' (got 'TLS')"),
        ({"GATEWAY_RETRY__TIERS_S": "[60,60]"},
         "error: invalid setting: GATEWAY_RETRY__TIERS_S: retry.tiers_s lists 60 s twice: list each delay once"),
        ({"GATEWAY_CONCURENCY__MAX_IN_FLIGHT": "5"},
         "error: GATEWAY_CONCURENCY__MAX_IN_FLIGHT: unknown setting, no setting or section 'concurency' (did you mean "
         "GATEWAY_CONCURRENCY__MAX_IN_FLIGHT?)"),
    ],
)
def test_a_bad_variable_is_one_line_exit_2(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    code, stderr = gateway(tmp_path, "run", env={**BROKER, **env})
    assert (code, one_line(stderr)) == (CONFIGURATION, expected)


def test_a_missing_config_file(tmp_path: Path) -> None:
    code, stderr = gateway(tmp_path, "run", "--config", "nope.toml")
    assert (code, one_line(stderr)) == (CONFIGURATION, "error: --config nope.toml: no such file")


def test_a_malformed_config_file(tmp_path: Path) -> None:
    config = write(tmp_path, "[kafka]\nbootstrap_servers = 127.0.0.1:9092\n")
    code, stderr = gateway(tmp_path, "run", "--config", config)
    assert (code, one_line(stderr)) == (
        CONFIGURATION,
        f"error: --config {config}: not valid TOML: Expected newline or end of document after a statement "
        "(at line 2, column 26)",
    )


def test_a_typo_in_the_config_file_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path, "[concurency]\nmax_in_flight = 100\n")
    code, stderr = gateway(tmp_path, "run", "--config", config, env=BROKER)
    assert (code, one_line(stderr)) == (
        CONFIGURATION, f"error: invalid setting: concurency in {config}: unknown key (did you mean concurrency?)"
    )


def test_a_bad_value_in_the_config_file(tmp_path: Path) -> None:
    config = write(tmp_path, '[kafka]\nsecurity_protocol = "TLS"\n')
    code, stderr = gateway(tmp_path, "run", env={**BROKER, "GATEWAY_CONFIG": config})
    assert (code, one_line(stderr)) == (
        CONFIGURATION,
        f"error: invalid setting: kafka.security_protocol in {config}: must be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' "
        "or 'SASL_SSL' (got 'TLS')",
    )


def test_an_unreachable_broker_is_one_line_exit_1(tmp_path: Path) -> None:
    # Variables that are not the gateway's (the portal adapter's, the test suite's) pass the unknown-name check.
    env = {**BROKER, "GATEWAY_PORTAL_BASE_URL": "http://127.0.0.1:1", "GATEWAY_TEST_PG_DSN": "postgresql://x"}
    code, stderr = gateway(tmp_path, "run", env=env)
    assert code == UNREACHABLE
    line = one_line(stderr)
    # The cause is KafkaConnectionError, or TimeoutError when a loaded machine lets the 1 s pass first.
    assert line.startswith(
        "error: Kafka broker 127.0.0.1:1 (kafka.bootstrap_servers) did not answer within 1 s "
        "(kafka.connect_timeout_s): "
    ), line
    cause = line.split("(kafka.connect_timeout_s): ", 1)[1]
    assert cause.startswith(("KafkaConnectionError", "TimeoutError")), line
    assert not (tmp_path / "state.db").exists()  # checked before anything was set up


def test_no_bootstrap_servers(tmp_path: Path) -> None:
    code, stderr = gateway(tmp_path, "run")
    assert code == CONFIGURATION
    assert one_line(stderr).startswith("error: no Kafka bootstrap servers configured: set GATEWAY_KAFKA__BOOTSTRAP_")


def test_the_demo_refuses_bad_settings_the_same_way(tmp_path: Path) -> None:
    code, stderr = gateway(tmp_path, "demo", "--dossiers", "0", env={"GATEWAY_LOG_LEVEL": "LOUD"})
    assert code == CONFIGURATION
    assert one_line(stderr).startswith("error: invalid setting: GATEWAY_LOG_LEVEL: must be 'DEBUG', 'INFO'")


OPERATOR_COMMANDS = [["dlq", "list"], ["ledger", "verify"]]


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_operator_commands_refuse_bad_settings_with_exit_2(tmp_path: Path, command: list[str]) -> None:
    code, stderr = gateway(tmp_path, *command, env={"GATEWAY_HTTP__PORT": "http"})
    assert code == CONFIGURATION
    assert "GATEWAY_HTTP__PORT: must be a valid integer" in " ".join(stderr.split())


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_operator_commands_print_one_line(tmp_path: Path, command: list[str]) -> None:
    _, stderr = gateway(tmp_path, *command, env={"GATEWAY_HTTP__PORT": "http"})
    assert "GATEWAY_HTTP__PORT: must be a valid integer" in one_line(stderr)
