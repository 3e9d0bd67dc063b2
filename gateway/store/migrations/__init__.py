"""Alembic migrations for the gateway store (run them with gateway.store.migrate)."""
