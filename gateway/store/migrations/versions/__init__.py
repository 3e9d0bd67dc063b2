"""Alembic revision scripts for the gateway store, oldest first."""
