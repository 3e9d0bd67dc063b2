"""Gateway runtime: settings, composition root, broker runtime, state, metrics, CLI."""
