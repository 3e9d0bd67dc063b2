"""`gateway contracts validate FILE...`: check messages the way the gateway will, before a partner publishes them.

It runs the pipeline's own decoder (`gateway.pipeline.decode`: size limit, strict JSON, the contract models), so
"ok" here means the gateway accepts the message and "invalid" means it would dead-letter it with that reason.
One line per message; reasons name fields and rules, never the values (messages carry personal data).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gateway.errors import InvalidMessage
from gateway.pipeline import decode
from gateway.settings import KafkaSettings

contracts_app = typer.Typer(no_args_is_help=True, add_completion=False)


@contracts_app.callback()
def contracts() -> None:
    """Check messages against the published contracts (contracts/schemas, docs/partners.md)."""


DEFAULT_MAX_BYTES: int = KafkaSettings.model_fields["max_message_bytes"].default


def _messages(path: Path, lines: bool) -> Iterator[tuple[str, bytes]]:
    """(label, raw message) for each message of one file; `-` is standard input."""
    raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    name = "<stdin>" if str(path) == "-" else str(path)
    if not lines:
        yield name, raw
        return
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            yield f"{name}:{number}", line


def check(raw: bytes, max_bytes: int) -> str:
    """"ok <event type>" or "invalid: <reason>" for one message, as the pipeline would decide."""
    try:
        event = decode(raw, max_bytes)
    except InvalidMessage as exc:
        return f"invalid: {exc.reason}"
    return f"ok {event.event_type}"


@contracts_app.command("validate")
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(help="message files: one JSON message each (`-` reads standard input)", show_default=False),
    ],
    lines: Annotated[
        bool, typer.Option("--lines", help="JSON Lines: every non-empty line of a file is one message")
    ] = False,
    max_bytes: Annotated[
        int, typer.Option(min=1, help="largest message accepted, as kafka.max_message_bytes of the gateway")
    ] = DEFAULT_MAX_BYTES,
) -> None:
    """Decode each message with the gateway's own code: one line per message, exit 1 if any is invalid."""
    invalid = 0
    for path in files:
        try:
            messages = list(_messages(path, lines))
        except OSError as exc:
            sys.stdout.write(f"{path}: invalid: cannot read the file ({type(exc).__name__})\n")
            invalid += 1
            continue
        if not messages:
            sys.stdout.write(f"{path}: invalid: no message in the file\n")
            invalid += 1
        for label, raw in messages:
            verdict = check(raw, max_bytes)
            invalid += verdict.startswith("invalid")
            sys.stdout.write(f"{label}: {verdict}\n")
    raise typer.Exit(1 if invalid else 0)
