"""Delayed retry tiers: topic names, the headers a parked copy carries, and how to read them back.

A message that keeps failing with a retryable error leaves the input partition (so other dossiers go on)
and waits in `<topic>.<adapter>-retry-<delay>`; a consumer per tier delivers it once its due time has
come. Headers keep where it came from, so a later dead letter still names the original topic/offset.

The ladder is validated (`validate_ladder`) because a tier is known by its label: two delays with one label
would share a topic and a consumer group. Parked rows name their tier by index, so a ladder change must also
be reconciled with what is parked (`gateway.store.ladder.reconcile_ladder`, run at start-up).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.topics import retry_topic
from gateway.runtime.records import InboundRecord

PREFIX = "gateway.retry."
H_TIER = PREFIX + "tier"
H_DUE_MS = PREFIX + "due.ms"
H_ATTEMPTS = PREFIX + "attempts"
H_FIRST_FAILURE = PREFIX + "first.failure"
H_ORIGIN_TOPIC = PREFIX + "origin.topic"
H_ORIGIN_PARTITION = PREFIX + "origin.partition"
H_ORIGIN_OFFSET = PREFIX + "origin.offset"
H_ORIGIN_TIMESTAMP = PREFIX + "origin.timestamp.ms"


def delay_label(seconds: float) -> str:
    """10 → "10s", 60 → "1m", 600 → "10m", 3600 → "1h" (the topic-name suffix)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(seconds * 1000)}ms"


MAX_TIERS = 10
# Below a millisecond the label would read "0ms"; a retry that soon is an in-process retry anyway.
MIN_DELAY_S = 0.001
# Tier topics keep the broker's default retention (7 days unless the operator changed it): a copy that waits
# longer could be deleted before it is due if its consumer restarts. This also bounds the label's length.
MAX_DELAY_S = 7 * 24 * 3600.0


def validate_ladder(delays_s: Sequence[float]) -> list[float]:
    """The ladder as a list if it is usable, else ValueError saying what to change.

    Usable: at most MAX_TIERS delays, each finite and between MIN_DELAY_S and MAX_DELAY_S, strictly
    increasing, and no two with the same label (the label names the tier's topic and consumer group).
    An empty ladder is allowed: retryable failures are then dead-lettered after the in-process attempts.
    """
    delays = [float(d) for d in delays_s]
    if len(delays) > MAX_TIERS:
        raise ValueError(f"retry.tiers_s has {len(delays)} delays, at most {MAX_TIERS} are allowed: drop some of them")
    by_label: dict[str, float] = {}
    for i, delay in enumerate(delays):
        if not math.isfinite(delay):
            raise ValueError(f"retry.tiers_s[{i}] is {delay}: give each delay as a finite number of seconds")
        if not MIN_DELAY_S <= delay <= MAX_DELAY_S:
            raise ValueError(
                f"retry.tiers_s[{i}] is {delay:g} s: each delay must be between {MIN_DELAY_S:g} s and "
                f"{MAX_DELAY_S:g} s (7 days)"
            )
        if i > 0 and delay == delays[i - 1]:
            raise ValueError(f"retry.tiers_s lists {delay:g} s twice: list each delay once")
        if i > 0 and delay < delays[i - 1]:
            raise ValueError(
                f"retry.tiers_s is not increasing ({delays[i - 1]:g} s before {delay:g} s): "
                "list the delays shortest first"
            )
        label = delay_label(delay)
        if label in by_label:
            raise ValueError(
                f"retry.tiers_s: {by_label[label]:g} s and {delay:g} s both get the topic suffix {label!r} "
                "(one topic and consumer group for two tiers): give delays in whole milliseconds"
            )
        by_label[label] = delay
    return delays


@dataclass(frozen=True, slots=True)
class RetryTier:
    """One delay step of the retry ladder."""

    index: int
    delay_s: float
    label: str
    topic: str


def build_tiers(input_topic: str, adapter: str, delays_s: Sequence[float]) -> tuple[RetryTier, ...]:
    """The retry ladder of one adapter reading one input topic; ValueError if the delays are unusable."""
    return tuple(
        RetryTier(i, d, delay_label(d), retry_topic(input_topic, adapter, delay_label(d)))
        for i, d in enumerate(validate_ladder(delays_s))
    )


@dataclass(frozen=True, slots=True)
class RetryState:
    """What a parked copy says about its history."""

    tier: int
    attempts: int
    first_failure: str | None
    origin: InboundRecord


def _text(record: InboundRecord, name: str) -> str | None:
    raw = record.header(name)
    return raw.decode("utf-8", "replace") if raw is not None else None


def is_retry_copy(record: InboundRecord) -> bool:
    return record.header(H_TIER) is not None


def retry_state(record: InboundRecord) -> RetryState:
    """Read a parked copy's headers; the origin is the input record as first consumed."""
    origin = InboundRecord(
        topic=_text(record, H_ORIGIN_TOPIC) or record.topic,
        partition=int(_text(record, H_ORIGIN_PARTITION) or record.partition),
        offset=int(_text(record, H_ORIGIN_OFFSET) or record.offset),
        key=record.key,
        value=record.value,
        timestamp_ms=int(_text(record, H_ORIGIN_TIMESTAMP) or record.timestamp_ms),
        headers=tuple((k, v) for k, v in record.headers if not k.startswith(PREFIX)),
    )
    return RetryState(
        tier=int(_text(record, H_TIER) or 0),
        attempts=int(_text(record, H_ATTEMPTS) or 0),
        first_failure=_text(record, H_FIRST_FAILURE),
        origin=origin,
    )


def due_at(record: InboundRecord) -> float:
    """Wall-clock time (epoch seconds) from which a parked copy may be tried; 0.0 when it says nothing usable.

    The tier consumers' `due_at` hook: a copy not yet due stays in the broker (its partition paused until
    then) instead of holding a lane, an in-flight slot and the commit floor while it sleeps. Never raises:
    a copy with a malformed due header is simply due.
    """
    due = _text(record, H_DUE_MS)
    try:
        return int(due) / 1000 if due else 0.0
    except ValueError:
        return 0.0


def due_in_s(record: InboundRecord) -> float:
    """Seconds until a parked copy may be tried (0 when due)."""
    return max(0.0, due_at(record) - time.time())


def retry_headers(origin: InboundRecord, tier: RetryTier, attempts: int, first_failure: str) -> dict[str, str]:
    """Headers of the copy parked in `tier`: the origin's own headers plus the retry context."""
    headers: dict[str, str] = {}
    for name, value in origin.headers:
        try:
            headers[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary headers of the origin are not needed to deliver it
    headers.update(
        {
            H_TIER: str(tier.index),
            H_DUE_MS: str(int((time.time() + tier.delay_s) * 1000)),
            H_ATTEMPTS: str(attempts),
            H_FIRST_FAILURE: first_failure,
            H_ORIGIN_TOPIC: origin.topic,
            H_ORIGIN_PARTITION: str(origin.partition),
            H_ORIGIN_OFFSET: str(origin.offset),
            H_ORIGIN_TIMESTAMP: str(origin.timestamp_ms),
        }
    )
    return headers
