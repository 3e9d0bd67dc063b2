"""The `gateway` command: run the production process, or a self-contained demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.cli_ops import dlq_app, ledger_app, trace
from gateway.logging import configure_logging
from gateway.runtime import tuning
from gateway.settings import load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Provincial one-stop integration gateway.")
err = Console(stderr=True)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env GATEWAY_* wins over it)")] = None,
    embedded_broker: Annotated[
        bool, typer.Option("--embedded-broker", help="start a throw-away in-memory broker (trial only)")
    ] = False,
) -> None:
    """Run the gateway until SIGINT/SIGTERM (needs GATEWAY_KAFKA__BOOTSTRAP_SERVERS)."""
    from gateway.runner import ConfigurationError, run_forever

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_json)
    try:
        code = tuning.run(run_forever(settings, embedded_broker=embedded_broker, console=err))
    except ConfigurationError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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

    configure_logging("WARNING", json=False)
    code = tuning.run(
        run_demo(
            dossiers, report_file=report, serve=serve, seed=seed, portal_latency_ms=portal_latency_ms,
            portal_error_rate=portal_error_rate, console=err,
        )
    )
    raise typer.Exit(code)


@app.command("schemas")
def schemas() -> None:
    """Print the path of the published contracts (JSON Schema, AsyncAPI)."""
    from contracts.export import SCHEMA_DIR

    sys.stdout.write(json.dumps({"schemas": str(SCHEMA_DIR), "asyncapi": str(SCHEMA_DIR.parent / "asyncapi.json")}))
    sys.stdout.write("\n")


app.add_typer(dlq_app, name="dlq")
app.add_typer(ledger_app, name="ledger")
app.command("trace")(trace)
