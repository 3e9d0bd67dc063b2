"""The composition root: builds every part of a gateway process from settings; nothing connects at import."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware

from contracts.topics import dead_letter_topic
from gateway.adapter import Adapter
from gateway.circuit import CircuitBreaker, CircuitState
from gateway.delivery.flows import ReactionFlow
from gateway.delivery.replies import ReplyTopicPublisher
from gateway.feeds.poller import FeedPoller, default_holder
from gateway.followups.runner import FollowUpRunner
from gateway.http_server import OperatorServer
from gateway.inbound.listener import InboundListener
from gateway.kafka_admin import ensure_topics
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.plugins import (
    BuildContext,
    ConfigurationError,
    PartnerClient,
    input_topic,
    load,
    output_topic,
    reaction_topic,
)
from gateway.retry_topics import build_tiers, due_at
from gateway.runtime.kafka_options import faststream_security, security_options
from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.publisher import BrokerPublisher, ProducerPublisher, Publisher, broker_producer
from gateway.runtime.tuning import settle_heap
from gateway.settings import GatewaySettings
from gateway.store import LadderChanged, Store, open_store, reconcile_ladder

log = structlog.get_logger(__name__)


__all__ = ["AdapterRuntime", "ConfigurationError", "Gateway", "start_gateway"]


@dataclass
class AdapterRuntime:
    """One adapter wired to its client, pipeline and consumer."""

    adapter: Adapter
    client: PartnerClient
    pipeline: Pipeline
    consumer: KeyOrderedConsumer
    retry_consumers: list[KeyOrderedConsumer]
    breaker: CircuitBreaker
    pollers: list[FeedPoller] = field(default_factory=list)
    follow_ups: FollowUpRunner | None = None
    reaction_consumers: list[KeyOrderedConsumer] = field(default_factory=list)
    """One per other partner's events topic the adapter reacts to (gateway.plugins.Reaction)."""

    @property
    def consumers(self) -> list[KeyOrderedConsumer]:
        return [self.consumer, *self.retry_consumers, *self.reaction_consumers]


@dataclass
class Gateway:
    """A running gateway process: broker connection, state, adapters and the operator endpoint."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    broker: KafkaBroker
    runtimes: list[AdapterRuntime] = field(default_factory=list)
    server: OperatorServer | None = None
    store: Store | None = None
    inbound: InboundListener | None = None
    _sampler: asyncio.Task[None] | None = None
    _index_gauges: Any = None  # gateway.index.metrics.IndexGauges, built at the first sample
    _index_due: float = 0.0

    async def _sample(self, every_s: float = 5.0) -> None:
        """Gauges that are cheaper to sample than to maintain on every message, and the broker's answer.

        First, every labelled series the alert rules use is created at 0 (GatewayMetrics.prime), so the
        first dead letter of a class is an increase Prometheus can see.
        """
        from gateway.retry_topics import delay_label

        self.metrics.prime(self.settings.adapters, [delay_label(d) for d in self.settings.retry.tiers_s])
        while True:
            try:  # sampled, not left to whoever calls /health/ready
                connected = await self.broker.ping(timeout=min(2.0, every_s))
            except Exception:
                connected = False
            self.metrics.broker_connected.set(1 if connected else 0)
            if self.store is not None:
                for rt in self.runtimes:
                    with contextlib.suppress(Exception):
                        parked = await self.store.parking.count(rt.adapter.name)
                        self.metrics.parked.labels(rt.adapter.name).set(parked)
                await self._sample_index()
            # Every consumer's lag at once (each waits at most 2 s for the broker), so one slow answer does not
            # hold back the next sample of the others or of the broker check.
            consumers = [(rt.adapter.name, c) for rt in self.runtimes for c in rt.consumers]
            answers = await asyncio.gather(*(c.lag() for _, c in consumers), return_exceptions=True)
            for (adapter, consumer), lags in zip(consumers, answers, strict=True):
                if isinstance(lags, dict):  # None or an error: the broker did not answer; keep the last figures
                    self.metrics.set_lag(adapter, consumer.group_id,
                                         {(tp.topic, tp.partition): n for tp, n in lags.items()})
            await asyncio.sleep(every_s)

    async def _sample_index(self, *, now: bool = False) -> None:
        """The service-index gauges (gateway.index.metrics), at most once a minute unless `now`."""
        from gateway.index import metrics as index_metrics

        moment = time.monotonic()
        if self.store is None or (moment < self._index_due and not now):
            return
        self._index_due = moment + index_metrics.EVERY_S
        if self._index_gauges is None:
            self._index_gauges = index_metrics.IndexGauges(self.metrics.registry)
        with contextlib.suppress(Exception):  # a gauge left stale for a minute is better than a dead sampler
            await index_metrics.sample(self.store.service_index, self._index_gauges)

    async def refresh_index_metrics(self) -> None:
        """Recompute the service-index gauges at once (they are otherwise sampled once a minute)."""
        await self._sample_index(now=True)

    @property
    def metrics_url(self) -> str:
        return f"{self.server.url}/metrics" if self.server else ""

    async def readiness(self) -> dict[str, bool]:
        try:
            broker_ok = await self.broker.ping(timeout=2.0)
        except Exception:
            broker_ok = False
        # gateway_broker_connected is _sample's (every 5 s, probe or not); this answer is the probe's own.
        checks = {"broker": bool(broker_ok)}
        checks.update({f"consumer:{c.group_id}": c.running for rt in self.runtimes for c in rt.consumers})
        # A poller is healthy while it polls or waits its turn (another process holds the feed).
        checks.update({f"feed:{p.name}": p.healthy for rt in self.runtimes for p in rt.pollers})
        checks.update({f"follow-ups:{rt.adapter.name}": rt.follow_ups.healthy
                       for rt in self.runtimes if rt.follow_ups is not None})
        return checks

    async def stop(self) -> None:
        """Drain consumers, then close clients, the broker, the database and the endpoint."""
        if self._sampler is not None:
            self._sampler.cancel()
        if self.inbound is not None:  # partners get no answer from now on: they call again later
            await self.inbound.stop()
        await asyncio.gather(*(p.stop() for rt in self.runtimes for p in rt.pollers), return_exceptions=True)
        await asyncio.gather(*(rt.follow_ups.stop() for rt in self.runtimes if rt.follow_ups is not None),
                             return_exceptions=True)
        await asyncio.gather(*(c.stop() for rt in self.runtimes for c in rt.consumers), return_exceptions=True)
        for rt in self.runtimes:
            with contextlib.suppress(Exception):
                await rt.client.close()
        for rt in self.runtimes:
            rt.breaker.close()
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self.store is not None:
            await self.store.close()
        if self.server is not None:
            await self.server.stop()


TIER_FETCH_MAX_WAIT_MS = 500


def _pause_on_open(runtime: AdapterRuntime, metrics: GatewayMetrics) -> Callable[[CircuitState, CircuitState], None]:
    """While a partner's circuit is open its consumers fetch nothing: lag grows, nothing is lost."""
    partner = runtime.adapter.name

    def on_change(old: CircuitState, new: CircuitState) -> None:
        metrics.circuit_state.labels(partner).set(int(new))
        metrics.circuit_transitions.labels(partner, new.name.lower()).inc()
        log.warning("circuit_transition", partner=partner, old=old.name, new=new.name)
        for consumer in runtime.consumers:
            if new is CircuitState.OPEN:
                consumer.pause("circuit")
            else:  # half-open lets messages queue at the gate behind the probes
                consumer.resume("circuit")

    return on_change


def _replying(flow: Any, results: Publisher, settings: GatewaySettings) -> Publisher:
    """The results publisher of a request/reply flow creates each reply topic (short retention) on first use."""
    if getattr(flow, "answer_topic", None) is None:
        return results
    replies = settings.replies

    async def ensure(topic: str) -> None:
        await ensure_topics(
            settings.kafka.bootstrap_servers or "", {topic: replies.partitions}, settings.kafka.replication_factor,
            configs={topic: {"retention.ms": str(replies.retention_ms)}}, **security_options(settings.kafka),
        )

    return ReplyTopicPublisher(results, prefix=replies.topic_prefix, ensure=ensure)


async def start_gateway(
    settings: GatewaySettings, *, serve_http: bool = True, adapter_settings: Mapping[str, Any] | None = None
) -> Gateway:
    """Build and start everything; on failure, stop what was started and re-raise.

    `adapter_settings` overrides an adapter's settings object (by adapter name); otherwise each adapter
    reads its own from the environment.
    """
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigurationError(
            "no Kafka bootstrap servers configured: set GATEWAY_KAFKA__BOOTSTRAP_SERVERS=host:port "
            "(or kafka.bootstrap_servers in the config file), or try `gateway run --embedded-broker`"
        )
    metrics = GatewayMetrics()
    broker = KafkaBroker(
        bootstrap,
        logger=None,
        client_id="dossier-gateway",
        # Every record we publish stands for an input offset we then commit: it must be on every in-sync
        # replica first (FastStream's default is acks=1). Results share this producer (one per process).
        acks="all",
        security=faststream_security(settings.kafka),
        # Dead letters carry the original bytes, which may exceed Kafka's usual 1 MB request size.
        max_request_size=settings.kafka.max_dead_letter_bytes + 256 * 1024,
        # FastStream's own metrics for the publishing side (results, retries, dead letters), same registry.
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="dossier-gateway")],
    )
    gw = Gateway(settings=settings, metrics=metrics, broker=broker)
    try:
        store = gw.store = await open_store(settings.database_url)
        names = settings.topics
        plugins = {name: load(name) for name in settings.adapters}
        inputs = {name: input_topic(name, names) for name in settings.adapters}
        outputs = {name: output_topic(name, names) for name in settings.adapters}
        # Before any connection: parked rows must still fit the ladder, or the process must not start.
        ladders = {name: build_tiers(inputs[name], name, settings.retry.tiers_s) for name in settings.adapters}
        for name, tiers in ladders.items():
            try:
                await reconcile_ladder(store.engine, name, [tier.label for tier in tiers])
            except LadderChanged as exc:
                raise ConfigurationError(str(exc)) from None
        # Built before connecting (building connects nothing): a plug-in's configuration error stops the start
        # before any connection, and the topics its reactions read are known when topics are created.
        parts_of = {
            name: plugins[name].build(BuildContext(
                metrics, outputs[name], settings.concurrency.max_in_flight, (adapter_settings or {}).get(name),
                store=store, reply_prefix=settings.replies.topic_prefix,
            ))
            for name in settings.adapters
        }
        reactions = {
            name: [(reaction, reaction_topic(reaction, names)) for reaction in parts_of[name].reactions]
            for name in settings.adapters
        }
        dead_letters = [dead_letter_topic(inputs[name], name) for name in settings.adapters] + [
            dead_letter_topic(source, name) for name in settings.adapters for _, source in reactions[name]
        ]
        await broker.connect()
        topics = {topic: settings.kafka.input_partitions for topic in [*inputs.values(), *outputs.values()]}
        for name in settings.adapters:
            for _, source in reactions[name]:
                topics.setdefault(source, settings.kafka.input_partitions)
            for tier in ladders[name]:
                topics[tier.topic] = settings.kafka.input_partitions
        for topic in dead_letters:
            topics[topic] = 1
        # Dead letters wait for an operator: keep them until replayed or purged, not Kafka's default week.
        big = str(settings.kafka.max_dead_letter_bytes + 256 * 1024)
        keep = {topic: {"retention.ms": "-1", "max.message.bytes": big} for topic in dead_letters}
        await ensure_topics(
            bootstrap, topics, settings.kafka.replication_factor, configs=keep, **security_options(settings.kafka)
        )
        publisher = BrokerPublisher(broker)
        results = ProducerPublisher(broker_producer(broker))
        options = ConsumerOptions(
            max_in_flight=settings.concurrency.max_in_flight,
            commit_interval_s=settings.concurrency.commit_interval_s,
            drain_timeout_s=settings.concurrency.drain_timeout_s,
            session_timeout_ms=settings.kafka.session_timeout_ms,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
            extra=security_options(settings.kafka),
        )
        holder = default_holder()  # this process, as the holder of the feeds' leases
        callbacks: list[Any] = []
        for name in settings.adapters:
            parts = parts_of[name]
            callbacks.extend(parts.callbacks)
            adapter, client = parts.handlers, parts.client
            breaker = CircuitBreaker(
                name,
                failure_threshold=settings.circuit.failure_threshold,
                open_s=settings.circuit.open_s,
                max_open_s=settings.circuit.max_open_s,
                probe_limit=settings.circuit.probe_limit,
                on_probe=metrics.circuit_probes.labels(name).inc,
            )
            await client.start()
            pipeline = Pipeline(
                adapter, publisher=publisher, results=_replying(parts.flow, results, settings),
                committer=store.committer, parking=store.parking,
                tiers=ladders[name], breaker=breaker, metrics=metrics,
                retry=settings.retry, results_topic=outputs[name], max_message_bytes=settings.kafka.max_message_bytes,
                max_dead_letter_bytes=settings.kafka.max_dead_letter_bytes, flow=parts.flow,
                follow_ups=store.followups,
            )
            consumer = KeyOrderedConsumer(
                bootstrap_servers=bootstrap,
                group_id=f"{settings.kafka.group_prefix}.{name}",
                topics=(inputs[name],),
                handler=pipeline,
                options=options,
                on_in_flight=metrics.in_flight.labels(name).set,
                on_paused=metrics.paused_partitions.labels(name).set,
                on_rebalance=store.committer.forget_all,
                on_poison=pipeline.poison,
            )
            tier_consumers = [
                KeyOrderedConsumer(
                    bootstrap_servers=bootstrap,
                    group_id=f"{settings.kafka.group_prefix}.{name}.retry-{tier.label}",
                    topics=(tier.topic,),
                    handler=pipeline.tier_handler(tier),
                    # A copy not yet due stays in the broker, its partition paused until then: it holds no
                    # lane, in-flight slot or commit floor, and a revoke has nothing of it to drain.
                    due_at=due_at,
                    on_poison=pipeline.poison,
                    # A copy is due 10 s or more after it was written, so a long fetch wait costs nothing,
                    # while the input's short one, times every tier, kept the broker and gateway busy polling.
                    options=replace(
                        options,
                        drain_timeout_s=min(options.drain_timeout_s, 2.0),
                        fetch_max_wait_ms=max(options.fetch_max_wait_ms, TIER_FETCH_MAX_WAIT_MS),
                    ),
                    on_rebalance=store.committer.forget_all,
                )
                for tier in ladders[name]
            ]
            pollers = [
                FeedPoller(
                    source, feeds_store=store.feeds, publisher=publisher, breaker=breaker, settings=settings.feeds,
                    metrics=metrics, holder=holder,
                )
                for source in parts.feeds
            ]
            follow_ups = None
            if parts.follow_ups is not None:
                follow_ups = FollowUpRunner(
                    parts.follow_ups, store=store.followups, publisher=publisher, breaker=breaker,
                    settings=settings.followups, metrics=metrics, holder=holder, committer=store.committer,
                )
            # Another partner's events this adapter reacts to: a pipeline each (no answers, no tiers: in-process
            # retries, the shared circuit pausing it like the others, then a dead letter of its own).
            reaction_consumers = []
            for reaction, source in reactions[name]:
                reacting = Pipeline(
                    reaction.handlers, publisher=publisher, results=results, committer=store.committer,
                    parking=store.parking, tiers=(), breaker=breaker, metrics=metrics, retry=settings.retry,
                    results_topic=outputs[name], max_message_bytes=settings.kafka.max_message_bytes,
                    max_dead_letter_bytes=settings.kafka.max_dead_letter_bytes,
                    flow=ReactionFlow(reaction.parser) if reaction.parser is not None else ReactionFlow(),
                    follow_ups=store.followups,
                )
                reaction_consumers.append(KeyOrderedConsumer(
                    bootstrap_servers=bootstrap,
                    group_id=f"{settings.kafka.group_prefix}.{name}.from-{reaction.partner}",
                    topics=(source,),
                    handler=reacting,
                    options=options,
                    on_rebalance=store.committer.forget_all,
                    on_poison=reacting.poison,
                ))
            runtime = AdapterRuntime(
                adapter, client, pipeline, consumer, tier_consumers, breaker, pollers, follow_ups,
                reaction_consumers=reaction_consumers,
            )
            breaker.subscribe(_pause_on_open(runtime, metrics))
            gw.runtimes.append(runtime)
        # Every series a rule or dashboard reads exists at 0 before the first message: a counter born at 1
        # never shows an increase, so the first dead letter of a class would alert nobody.
        metrics.prime(settings.adapters, sorted({t.label for tiers in ladders.values() for t in tiers}))
        await asyncio.gather(*(c.start() for rt in gw.runtimes for c in rt.consumers))
        await asyncio.gather(*(p.start() for rt in gw.runtimes for p in rt.pollers))
        await asyncio.gather(*(rt.follow_ups.start() for rt in gw.runtimes if rt.follow_ups is not None))
        if callbacks:  # only when an adapter has routes: no public port otherwise
            gw.inbound = InboundListener(callbacks, store=store.inbound, publisher=publisher,
                                         settings=settings.inbound, metrics=metrics)
            await gw.inbound.start()
        if serve_http:
            gw.server = OperatorServer(metrics, gw.readiness, settings.http.host, settings.http.port)
            await gw.server.start()
        gw._sampler = asyncio.create_task(gw._sample(), name="gauges")
        settle_heap()
        log.info("gateway_started", adapters=settings.adapters, metrics=gw.metrics_url)
        return gw
    except BaseException:
        await gw.stop()
        raise
