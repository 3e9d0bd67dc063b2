"""Topic names, in one place, with the contract's major version as a suffix."""

from __future__ import annotations

from typing import Final

DOSSIER_EVENTS: Final = "onestop.dossier-events.v1"
"""Input: dossier lifecycle events from the one-stop system, keyed by dossier code."""

SYNC_RESULTS: Final = "gateway.sync-results.v1"
"""Output: one SyncResult per lifecycle event and partner, keyed by dossier code."""


def dead_letter_topic(source_topic: str, adapter: str) -> str:
    """Dead letters of one adapter reading one topic: `<topic>.<adapter>-dlt`."""
    return f"{source_topic}.{adapter}-dlt"


def retry_topic(source_topic: str, adapter: str, delay_label: str) -> str:
    """Delayed retries of one adapter: `<topic>.<adapter>-retry-<delay>` (e.g. `-retry-10s`)."""
    return f"{source_topic}.{adapter}-retry-{delay_label}"
