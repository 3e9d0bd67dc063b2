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


def commands_topic(partner: str) -> str:
    """Input: commands for one partner, keyed by dossier code: `onestop.commands.<partner>.v1`.

    One topic per partner: it carries only that partner's data (addresses for the postal service, amounts for
    the bank), so who may read it and how long it is kept can differ per partner, and a partner's backlog never
    delays another's commands. Order holds per dossier within a partner, which is the only order a partner needs.
    """
    return f"onestop.commands.{partner}.v1"


def partner_events_topic(partner: str) -> str:
    """Output: what one partner reported, and the answer to each of its commands: `gateway.partner-events.<partner>.v1`.

    A command's answer and the partner's later events about the same dossier share a topic and a key, so the
    one-stop system reads them in the order they happened.
    """
    return f"gateway.partner-events.{partner}.v1"
