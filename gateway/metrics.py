"""Prometheus metrics of the gateway, in one registry built by the composition root.

Labels are bounded sets (adapter, partner, operation, event type, outcome, error class): never a dossier
code, an ID number or any other personal or unbounded value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.parked = Gauge(
            "gateway_parked_messages", "Messages waiting in retry topics (sampled)", ["adapter"], registry=r
        )
        self.broker_connected = Gauge("gateway_broker_connected", "1 when the broker answers", registry=r)

    def total(self, sample_name: str) -> float:
        """Sum of every sample with this name across labels (e.g. `gateway_retries_total`)."""
        return sum(s.value for f in self.registry.collect() for s in f.samples if s.name == sample_name)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
