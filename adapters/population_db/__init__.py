"""population_db adapter (planned: see docs/architecture.md)."""
