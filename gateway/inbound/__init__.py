"""Inbound partner callbacks: a public listener, per-route verification by the adapter, durable before answered."""
