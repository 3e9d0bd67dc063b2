"""Durable follow-ups: "ask partner P about dossier X at time T", a row in the store that survives restarts.

Adapters return `gateway.followups.model.FollowUpRequest`s from a delivery and implement
`gateway.followups.model.FollowUpHandler`; the composition root runs one `gateway.followups.runner.FollowUpRunner`
per handler. This package's `__init__` imports nothing, so an adapter that imports the model does not pull in
the Kafka side (tests/unit/test_import_rules.py). docs/followups.md describes the whole shape.
"""
