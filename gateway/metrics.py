"""Prometheus metrics of the gateway, in one registry built by the composition root.

Labels are bounded sets (adapter, partner, operation, event type, outcome, error class): never a dossier
code, an ID number or any other personal or unbounded value.

A labelled series exists only once it is first touched, and Prometheus cannot see an increase from "no
series" to 1: the first dead letter of a class would never fire an `increase(...) > 0` alert. `prime()`
creates every series of the known label values at 0 (adapters from the settings, outcomes, the failure
classes of `gateway.errors`, the ladder's tiers) before any message is processed. The registry also
carries the process and platform collectors (`process_*`: CPU, memory, open files; `python_info`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from contracts.events import EVENT_TYPES
from gateway import errors

# Every outcome the pipeline counts in gateway_events_processed_total (README "Monitoring").
PROCESSED_OUTCOMES = (
    "synced", "rejected", "dead_lettered", "stale_dropped", "duplicate", "ignored", "retry_scheduled", "parked",
    "obsolete_copy",
)
# gateway_circuit_transitions_total{to_state}: CircuitState names, lower case.
CIRCUIT_STATES = ("closed", "half_open", "open")
# gateway_retries_total{tier} besides the ladder's labels.
IN_PROCESS_TIER = "inprocess"
# gateway_feed_polls_total{outcome}: a page published and the cursor moved (ok), nothing new or nothing to
# publish (empty), a poll that failed (failed), a poll skipped or fenced out because another process holds
# the feed (not_leader).
FEED_POLL_OUTCOMES = ("ok", "empty", "failed", "not_leader")
# gateway_followups_total{outcome}: a run finished the row (done), asked to come back later or failed at the
# partner retryably (rescheduled), the deadline passed or the partner refused for good (gave_up), or the run
# failed on our side — database, broker, a handler bug — and the row runs again once its claim lapses (failed).
FOLLOWUP_OUTCOMES = ("done", "rescheduled", "gave_up", "failed")
# gateway_inbound_requests_total{outcome}: a partner's callback recorded and published (accepted), seen before
# (duplicate), our side down so the partner must retry (retry), or refused (refused_<reason>, gateway.inbound).
INBOUND_OUTCOMES = (
    "accepted", "duplicate", "retry", "refused_content_type", "refused_too_large", "refused_timeout",
    "refused_malformed", "refused_signature", "refused_unknown", "refused_amount", "refused_source",
)


def failure_classes() -> tuple[str, ...]:
    """Names of the failure classes of gateway.errors that may be raised (every one but errors.ABSTRACT).

    Not only the leaves: a class with subclasses (PartnerProtocolError, whose HostileXml narrows it) is
    still raised as itself, and its series must exist at 0 like the others'.
    """
    found: list[str] = []
    pending: list[type[errors.GatewayError]] = [errors.GatewayError]
    while pending:
        cls = pending.pop()
        pending.extend(sub for sub in cls.__subclasses__() if sub.__module__ == errors.__name__)
        if cls not in errors.ABSTRACT:
            found.append(cls.__name__)
    return tuple(sorted(found))

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class GatewayMetrics:
    """Every metric the gateway exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "gateway_events_in_total", "Records consumed from input topics", ["adapter"], registry=r
        )
        self.events_processed = Counter(
            "gateway_events_processed_total",
            "Records finished, by outcome (synced, rejected, stale_dropped, duplicate, ignored, dead_lettered)",
            ["adapter", "event_type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "gateway_dead_letters_total", "Messages sent to a dead-letter topic", ["adapter", "error_class"], registry=r
        )
        self.retries = Counter(
            "gateway_retries_total", "Retries, by tier (inprocess or a retry topic)", ["adapter", "tier"], registry=r
        )
        self.stale_dropped = Counter(
            "gateway_stale_dropped_total", "Snapshots older than the synced version, dropped", ["adapter"], registry=r
        )
        self.partner_calls = Counter(
            "gateway_partner_calls_total", "Calls to partners by outcome", ["partner", "operation", "outcome"],
            registry=r,
        )
        self.partner_latency = Histogram(
            "gateway_partner_call_seconds", "Partner call latency", ["partner", "operation"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.sync_delay = Histogram(
            "gateway_sync_delay_seconds", "Event published → partner acknowledged", ["adapter"],
            buckets=_DELAY_BUCKETS, registry=r,
        )
        self.ledger_write = Histogram(
            "gateway_ledger_write_seconds", "Ledger append latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("gateway_in_flight_messages", "Messages being processed", ["adapter"], registry=r)
        self.paused_partitions = Gauge(
            "gateway_paused_partitions", "Partitions paused by back-pressure or an open circuit", ["adapter"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "gateway_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["partner"], registry=r
        )
        self.circuit_transitions = Counter(
            "gateway_circuit_transitions_total", "Circuit breaker transitions", ["partner", "to_state"], registry=r
        )
        self.circuit_probes = Counter(
            "gateway_circuit_probes_total", "Calls let through a half-open circuit to test the partner", ["partner"],
            registry=r,
        )
        self.parked = Gauge(
            "gateway_parked_messages", "Messages waiting in retry topics (sampled)", ["adapter"], registry=r
        )
        # Pulled feeds (gateway.feeds), labelled by feed name: a fixed, configured set, never partner data.
        self.feed_polls = Counter(
            "gateway_feed_polls_total", "Polls of a pulled feed, by outcome (ok, empty, failed, not_leader)",
            ["feed", "outcome"], registry=r,
        )
        self.feed_records = Counter(
            "gateway_feed_records_total", "Feed records published and covered by an advanced cursor", ["feed"],
            registry=r,
        )
        self.feed_cursor_advanced = Gauge(
            "gateway_feed_cursor_advanced_timestamp_seconds",
            "When the feed's cursor last moved (Unix time, from the store; 0 before the first advance)", ["feed"],
            registry=r,
        )
        self.feed_leader = Gauge(
            "gateway_feed_leader", "1 while this process holds the feed's lease (polls it)", ["feed"], registry=r
        )
        # Durable follow-ups (gateway.followups), labelled by adapter and kind: both fixed by the code, never a
        # dossier, a key or a payload value.
        self.followups_pending = Gauge(
            "gateway_followups_pending", "Follow-ups not finished yet (sampled by the runner every scan)",
            ["adapter", "kind"], registry=r,
        )
        self.followups_total = Counter(
            "gateway_followups_total", "Follow-up runs, by outcome (done, rescheduled, gave_up, failed)",
            ["adapter", "kind", "outcome"], registry=r,
        )
        self.followups_overdue = Gauge(
            "gateway_followups_overdue",
            "Follow-ups due for a while (10 scan intervals) that no runner holds (sampled by the runner)",
            ["adapter", "kind"], registry=r,
        )
        self.inbound_requests = Counter(
            "gateway_inbound_requests_total", "Partner callbacks on the inbound listener, by route and outcome",
            ["route", "outcome"], registry=r,
        )
        self.inbound_seconds = Histogram(
            "gateway_inbound_seconds", "Time from a callback's arrival to its answer", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.reconciliation_mismatches = Counter(
            "gateway_reconciliation_mismatches_total", "Discrepancies found reconciling a partner's statement",
            ["adapter", "kind"], registry=r,
        )
        self.broker_connected = Gauge(
            "gateway_broker_connected", "1 when the broker answered the last check (sampled every 5 s)", registry=r
        )
        # Consumer lag, sampled by the gateway itself (Gateway._sample): the embedded broker cannot answer a lag
        # exporter, so each process reports its own assigned partitions (docs/operations.md "Consumer lag").
        self.consumer_lag = Gauge(
            "gateway_consumer_lag",
            "Records not committed yet: partition high-water mark minus the group's committed offset (sampled)",
            ["adapter", "group", "topic", "partition"], registry=r,
        )
        self._lag_series: dict[str, set[tuple[str, str, str, str]]] = {}
        # Process metrics, as on the default registry: process_* (CPU, memory, file descriptors), python_*.
        if r is not REGISTRY:  # the default registry has them already (registering twice is an error)
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def prime(self, adapters: Iterable[str], tiers: Iterable[str], feeds: Iterable[str] = ()) -> None:
        """Create every labelled series of the known label values at 0; values already counted are kept.

        `adapters` are the configured adapters (a partner's label is its adapter's name), `tiers` the retry
        ladder's labels (`gateway.retry_topics.delay_label`), `feeds` the pulled feeds' names (`prime_feed`;
        a FeedPoller primes its own at start). Partner calls are primed for every operation already observed
        (`ObservedClient` creates its operations' `ok` series when it wraps a client).
        """
        for feed in feeds:
            self.prime_feed(feed)
        adapters, tiers = list(adapters), [IN_PROCESS_TIER, *tiers]
        classes = failure_classes()
        for adapter in adapters:
            self.events_in.labels(adapter)
            self.stale_dropped.labels(adapter)
            self.sync_delay.labels(adapter)
            self.in_flight.labels(adapter)
            self.paused_partitions.labels(adapter)
            self.parked.labels(adapter)
            self.circuit_state.labels(adapter)
            self.circuit_probes.labels(adapter)
            for event_type in EVENT_TYPES:
                for outcome in PROCESSED_OUTCOMES:
                    self.events_processed.labels(adapter, event_type, outcome)
            for error_class in classes:
                self.dead_letters.labels(adapter, error_class)
            for tier in tiers:
                self.retries.labels(adapter, tier)
            for state in CIRCUIT_STATES:
                self.circuit_transitions.labels(adapter, state)
        operations = {
            (sample.labels["partner"], sample.labels["operation"])
            for family in self.partner_calls.collect()
            for sample in family.samples
            if sample.name == "gateway_partner_calls_total"
        }
        for partner, operation in sorted(operations):
            self.partner_latency.labels(partner, operation)
            for outcome in ("ok", *classes):
                self.partner_calls.labels(partner, operation, outcome)

    def prime_feed(self, feed: str) -> None:
        """Create one pulled feed's series at 0 (values already set are kept)."""
        for outcome in FEED_POLL_OUTCOMES:
            self.feed_polls.labels(feed, outcome)
        self.feed_records.labels(feed)
        self.feed_cursor_advanced.labels(feed)
        self.feed_leader.labels(feed)

    def prime_followups(self, adapter: str, kinds: Iterable[str]) -> None:
        """Create one follow-up handler's series at 0 (values already set are kept)."""
        for kind in kinds:
            self.followups_pending.labels(adapter, kind)
            self.followups_overdue.labels(adapter, kind)
            for outcome in FOLLOWUP_OUTCOMES:
                self.followups_total.labels(adapter, kind, outcome)

    def set_lag(self, adapter: str, group: str, lags: dict[tuple[str, int], int]) -> None:
        """One consumer group's lag per (topic, partition) it holds now; partitions it no longer holds vanish."""
        now = {(adapter, group, topic, str(partition)): float(lag) for (topic, partition), lag in lags.items()}
        for gone in self._lag_series.get(group, set()) - now.keys():
            self.consumer_lag.remove(*gone)
        for labels, value in now.items():
            self.consumer_lag.labels(*labels).set(value)
        self._lag_series[group] = set(now)

    def series(self, sample_name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample with this name: its labels (sorted pairs) -> value."""
        return {
            tuple(sorted(s.labels.items())): s.value
            for f in self.registry.collect()
            for s in f.samples
            if s.name == sample_name
        }

    def total(self, sample_name: str) -> float:
        """Sum of every sample with this name across labels (e.g. `gateway_retries_total`)."""
        return sum(s.value for f in self.registry.collect() for s in f.samples if s.name == sample_name)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

