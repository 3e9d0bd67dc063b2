"""tax adapter (planned: see docs/architecture.md)."""
