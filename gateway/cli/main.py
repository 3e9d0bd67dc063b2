"""The `gateway` command: run the production process, or a self-contained demo.

A mistake in the settings ends every command with one line on stderr and exit status 2 (`gateway run`
also exits 1, with one line, when the broker does not answer at start); never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from gateway.cli import index as cli_index
from gateway.cli.audit import audit_app
from gateway.cli.check import check
from gateway.cli.contracts import contracts_app
from gateway.cli.ops import dlq_app, ledger_app, trace
from gateway.cli.payment import payment_app
from gateway.logging import configure_logging
from gateway.runtime import tuning
from gateway.settings import GatewaySettings, InvalidSettings, InvalidSettingValues, describe, load_settings

CONFIGURATION_ERROR = 2
BROKER_UNREACHABLE = 1

err = Console(stderr=True)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (never wrapped, never read as markup), then exit with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


class _GatewayApp(typer.Typer):
    """The console script: a settings error escaping any command is one line and exit 2, not a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except InvalidSettings as exc:
            _exit_with(str(exc))
        except ValidationError as exc:
            if isinstance(exc, InvalidSettingValues):
                _exit_with(str(exc))
            if exc.title == GatewaySettings.__name__:  # e.g. the demo builds its settings over the environment
                _exit_with(describe(exc))
            raise


def _exit_with(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    sys.exit(CONFIGURATION_ERROR)


app = _GatewayApp(no_args_is_help=True, add_completion=False, help="Provincial one-stop integration gateway.")


def settings_or_exit(config: Path | None) -> GatewaySettings:
    """Settings as every command reads them; a mistake ends the command with one line, exit 2."""
    try:
        return load_settings(config)
    except ValueError as exc:  # InvalidSettings, InvalidSettingValues: their message is that line
        fail(str(exc), CONFIGURATION_ERROR)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env GATEWAY_* wins over it)")] = None,
    embedded_broker: Annotated[
        bool, typer.Option("--embedded-broker", help="start a throw-away in-memory broker (trial only)")
    ] = False,
) -> None:
    """Run the gateway until SIGINT/SIGTERM (needs GATEWAY_KAFKA__BOOTSTRAP_SERVERS).

    Exit status: 0 after a signal, 2 for a configuration error, 1 when the broker does not answer at start.
    """
    from gateway.embedded_broker import EmbeddedBrokerError
    from gateway.runner import BrokerUnreachable, ConfigurationError, run_forever

    settings = settings_or_exit(config)
    configure_logging(settings.log_level, settings.log_json)
    try:
        code = tuning.run(run_forever(settings, embedded_broker=embedded_broker, console=err))
    except ConfigurationError as exc:
        fail(str(exc), CONFIGURATION_ERROR)
    except (BrokerUnreachable, EmbeddedBrokerError) as exc:
        fail(str(exc), BROKER_UNREACHABLE)
    raise typer.Exit(code)


@app.command()
def demo(
    dossiers: Annotated[int, typer.Option(min=0, help="dossier journeys to generate (0: no load)")] = 200,
    report: Annotated[Path | None, typer.Option(help="write the summary as JSON to this file")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="keep running until SIGINT/SIGTERM")] = False,
    seed: Annotated[int, typer.Option(help="generator seed")] = 2019,
    portal_latency_ms: Annotated[float, typer.Option(help="simulated portal latency")] = 20.0,
    portal_error_rate: Annotated[float, typer.Option(help="share of portal calls answered 503")] = 0.02,
) -> None:
    """Embedded broker + portal simulator + gateway + generated load; exits 0 when every dossier is synced."""
    from gateway.demo import run_demo
    from gateway.embedded_broker import EmbeddedBrokerError

    configure_logging("WARNING", json=False)
    try:
        code = tuning.run(
            run_demo(
                dossiers, report_file=report, serve=serve, seed=seed, portal_latency_ms=portal_latency_ms,
                portal_error_rate=portal_error_rate, console=err,
            )
        )
    except EmbeddedBrokerError as exc:  # e.g. installed without the [embedded] extra: one line, no traceback
        fail(str(exc), BROKER_UNREACHABLE)
    raise typer.Exit(code)


@app.command("schemas")
def schemas() -> None:
    """Print the path of the published contracts (JSON Schema, AsyncAPI)."""
    from contracts.export import SCHEMA_DIR

    sys.stdout.write(json.dumps({"schemas": str(SCHEMA_DIR), "asyncapi": str(SCHEMA_DIR.parent / "asyncapi.json")}))
    sys.stdout.write("\n")


app.add_typer(dlq_app, name="dlq")
app.add_typer(ledger_app, name="ledger")
app.add_typer(contracts_app, name="contracts")
app.add_typer(payment_app, name="payment")
app.command("trace")(trace)
app.command("index")(cli_index.index)
app.add_typer(audit_app, name="audit")
app.command("check")(check)
