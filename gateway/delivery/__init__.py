"""Delivery shapes: what a pipeline reads (lifecycle events, commands) and how it answers each input."""
