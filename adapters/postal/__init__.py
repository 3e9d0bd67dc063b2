"""postal adapter (planned: see docs/architecture.md)."""
