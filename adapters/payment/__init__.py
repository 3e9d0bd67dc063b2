"""payment adapter (planned: see docs/architecture.md)."""
