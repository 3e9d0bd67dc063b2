"""The `gateway` command line: `main` holds the root command (`run`, `demo`, `config`), one module per command
group beside it (ops: dlq, ledger, trace; audit; check; contracts; index; payment)."""

from gateway.cli.main import app

__all__ = ["app"]
