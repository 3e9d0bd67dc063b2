"""`gateway demo`: embedded broker, portal, postal and tax simulators, gateway and generated load in one process,
with a report.

The gateway runs three adapters (`national_portal` reads the lifecycle events, `postal` the postal commands and the
tracking feed, `tax` the tax commands and its durable follow-ups). The load generator's journeys go to the input
topic; the postal commands they cause (dossiers received by post, results returned by post: gateway.loadgen.postal)
go to the postal commands topic and the tax commands (land dossiers at their financial-obligation step:
gateway.loadgen.tax) to the tax commands topic, each right after the event that caused it. The demo waits until
every dossier is synced, every command answered, every postal order final and every land dossier's follow-ups
over (or a deadline), then judges the three partners from outside (gateway.demo.postal for the post,
gateway.demo.tax for the tax office).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import prometheus_client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import generate_latest
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.national_portal import mapping
from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import PortalSimulator
from adapters.payment.simulator import PaymentSimulator
from adapters.postal.simulator import PostalSimulator
from adapters.tax.simulator import TaxSimulator
from contracts.events import ProcessingStepDone, Rated
from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, dead_letter_topic
from gateway.bootstrap import Gateway, start_gateway
from gateway.demo import payment as demo_payment
from gateway.demo import population as demo_population
from gateway.demo import postal as demo_postal
from gateway.demo import tax as demo_tax
from gateway.demo.payment import PaymentReport, PaymentWatcher
from gateway.demo.postal import PostalReport, PostalWatcher
from gateway.demo.tax import TaxReport, TaxWatcher
from gateway.embedded_broker import EmbeddedBroker
from gateway.loadgen.journeys import Journey, encode, generate_journeys, key
from gateway.loadgen.postal import postal_commands
from gateway.loadgen.tax import tax_commands
from gateway.plugins import input_topic, output_topic, settings_environment
from gateway.settings import FeedSettings, GatewaySettings, HttpSettings, InboundSettings, KafkaSettings

ADAPTERS = ["national_portal", "postal", "tax", "population_db", "payment"]
# Orders progress every demo_postal.TICK_S: poll the tracking feed about as often, so a final state reaches the
# topic within a second, and come back fast after an injected error (production polls every 5 s).
DEMO_FEEDS = FeedSettings(interval_s=0.5, backoff_initial_s=0.2, backoff_max_s=2.0)


@dataclass
class DemoReport:
    """What an operator reads after a demo run; `lost` compares the partner's final state with the source's."""

    dossiers: int
    events_produced: int
    events_in: int = 0
    synced: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    lost: int = 0
    stale_dropped: int = 0
    retried: int = 0
    duplicate_effects: int = 0
    sync_delay_p50_ms: float = 0.0
    sync_delay_p99_ms: float = 0.0
    duration_s: float = 0.0
    events_per_s: float = 0.0
    converged: bool = False
    lost_examples: list[str] = field(default_factory=list)
    postal: PostalReport = field(default_factory=PostalReport)
    """The postal adapter's part: its own `lost`, `converged` (the figures above are the portal's)."""
    tax: TaxReport = field(default_factory=TaxReport)
    """The tax adapter's part: its own `lost`, `converged`, `second_submissions`."""
    population: demo_population.PopulationReport = field(default_factory=demo_population.PopulationReport)
    """The population database's part: lookups answered, refused (policy, rate limit), `lost`."""
    payment: PaymentReport = field(default_factory=PaymentReport)
    """The payment adapter's part (fee requests, callbacks lost and recovered by inquiry): `lost`, `confirmed_twice`."""


def _without_facts(record: dict[str, Any]) -> dict[str, Any]:
    # Fields other partners' events may fill (mapping.FACT_FIELDS): when they arrive, relative to the dossier's
    # last event, is a race the source journey cannot tell, so the comparison leaves them out.
    return {k: v for k, v in record.items() if k not in mapping.FACT_FIELDS}


def expected_portal_view(journey: Journey) -> dict[str, Any]:
    """What the portal must show for a dossier once every event of its journey was synced."""
    return {
        "record": _without_facts(mapping.snapshot_record(journey.final_snapshot)),
        "steps": sum(isinstance(e, ProcessingStepDone) for e in journey.events),
        "ratings": sum(isinstance(e, Rated) for e in journey.events),
    }


def count_lost(journeys: list[Journey], portal: dict[str, dict[str, Any]]) -> list[str]:
    """Dossier codes whose state at the portal differs from the generator's final state."""
    lost = []
    for journey in journeys:
        seen = portal.get(journey.dossier_code)
        want = expected_portal_view(journey)
        if seen is not None:
            seen = {**seen, "record": _without_facts(seen["record"])}
        if seen is None or any(seen[k] != v for k, v in want.items()):
            lost.append(journey.dossier_code)
    return lost


def interleave(journeys: list[Journey]) -> list[tuple[bytes, bytes, str]]:
    """Events of many dossiers mixed as a live province produces them, each dossier's in order."""
    out: list[tuple[bytes, bytes, str]] = []
    depth = max((len(j.events) for j in journeys), default=0)
    for i in range(depth):
        for j in journeys:
            if i < len(j.events):
                event = j.events[i]
                out.append((key(event), encode(event), str(event.event_id)))
    return out


class ResultWatcher:
    """Reads the result and dead-letter topics to count outcomes and measure sync delay."""

    def __init__(self, bootstrap: str, adapter: str) -> None:
        self._bootstrap = bootstrap
        self._dlt = dead_letter_topic(DOSSIER_EVENTS, adapter)
        self.outcomes: Counter[str] = Counter()
        self.dead_letters = 0
        self.delays_ms: list[float] = []
        self.sent_at_ms: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        parts = [TopicPartition(SYNC_RESULTS, p) for p in (self._consumer.partitions_for_topic(SYNC_RESULTS) or [])]
        parts += [TopicPartition(self._dlt, p) for p in (self._consumer.partitions_for_topic(self._dlt) or [0])]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == self._dlt:
                        self.dead_letters += 1
                        continue
                    body = json.loads(r.value)
                    self.outcomes[body["outcome"]] += 1
                    if body.get("event_type") != "gateway.sync_result":  # an answer to unreadable input
                        continue
                    sent = self.sent_at_ms.get(body["source_event_id"])
                    if body["outcome"] == "synced" and sent is not None:
                        self.delays_ms.append(max(0, r.timestamp - sent))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _adapter_total(metric: prometheus_client.Counter, adapter: str) -> float:
    """One counter's total for one adapter (every other label summed): the portal's figures stay the portal's
    beside the post's. Collected from that counter alone: the progress loop asks twice a second, and collecting
    the whole registry each time was an eighth of the demo's event loop."""
    return sum(
        s.value for f in metric.collect() for s in f.samples
        if s.name.endswith("_total") and s.labels.get("adapter") == adapter
    )


# Lifecycle events the one-stop system may have written that the portal has not yet answered. A province writes
# its events as officers work, not 13,500 at once: beyond a few seconds' backlog, one process running five
# simulators, the gateway and the watchers only piles up work whose timeouts then fire for nothing (2,000 dossiers
# all at once: 90 payment callbacks answered 503, 23 follow-up claims lapsed, sync delay p50 57 s; 2,000 ahead:
# 5, 0 and 6 s).
AHEAD = 2_000


async def _produce(
    bootstrap: str, items: list[tuple[str, bytes, bytes, str]], watcher: ResultWatcher, tick: Any, ahead: int
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending: list[tuple[str, asyncio.Future[Any]]] = []
        sent = 0
        for topic, k, v, event_id in items:
            if topic == DOSSIER_EVENTS:
                while sent - (sum(watcher.outcomes.values()) + watcher.dead_letters) >= ahead:
                    await _settle(pending, watcher, tick)
                    await asyncio.sleep(0.05)
                sent += 1
            pending.append((event_id, await producer.send(topic, v, key=k)))
            if len(pending) >= 500:
                await _settle(pending, watcher, tick)
        await _settle(pending, watcher, tick)
    finally:
        await producer.stop()


async def _settle(pending: list[tuple[str, asyncio.Future[Any]]], watcher: ResultWatcher, tick: Any) -> None:
    for event_id, fut in pending:
        meta = await fut
        watcher.sent_at_ms[event_id] = meta.timestamp if meta.timestamp > 0 else int(time.time() * 1000)
    tick(len(pending))
    pending.clear()


async def run_demo(
    dossiers: int,
    *,
    report_file: Path | None = None,
    serve: bool = False,
    seed: int = 2019,
    portal_latency_ms: float = 20.0,
    portal_error_rate: float = 0.02,
    timeout_s: float | None = None,
    console: Console | None = None,
    database_url: str | None = None,
    metrics_file: Path | None = None,
    fee_payments: bool = True,
    ahead: int = AHEAD,
) -> int:
    """Run the whole demo; return the process exit code (0 when every dossier converged, every postal command
    was answered and order settled, every tax command answered and land dossier followed up to its end, nothing
    lost, no second postal order, no form submitted twice)."""
    console = console or Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    sim = PortalSimulator(latency_ms=portal_latency_ms, error_rate=portal_error_rate, seed=seed)
    post = demo_postal.simulator(seed)
    population = demo_population.simulator(seed)
    tax_sim: TaxSimulator | None = None
    gw: Gateway | None = None
    watcher: ResultWatcher | None = None
    postal_watcher: PostalWatcher | None = None
    tax_watcher: TaxWatcher | None = None
    pay_sim: PaymentSimulator = demo_payment.simulator(seed)
    pay_watcher: PaymentWatcher | None = None
    keys_dir = Path(tempfile.mkdtemp(prefix="gateway-demo-keys-"))  # the throw-away land-office key; removed
    try:
        tax_office, keys = await asyncio.to_thread(demo_tax.simulator, keys_dir, seed)  # RSA keys: off the loop
        tax_sim = tax_office
        portal_url = await sim.start()
        postal_url = await post.start()
        await tax_office.start()
        await population.start()
        await pay_sim.start()
        settings = GatewaySettings(
            adapters=ADAPTERS,
            database_url=database_url or f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
            kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=8),
            http=HttpSettings(port=0),
            feeds=DEMO_FEEDS,
            followups=demo_tax.FOLLOW_UPS,
            inbound=InboundSettings(port=0),  # the payment platform's callbacks
        )
        portal = PortalSettings(
            base_url=portal_url, username="gateway", password="secret", dstcode="H34", madonvi="000.00.00.H55"  # noqa: S106
        )
        supplied = {
            "national_portal": portal, "postal": demo_postal.settings(postal_url),
            "tax": demo_tax.settings(tax_office, keys), "payment": demo_payment.settings(pay_sim),
            "population_db": demo_population.settings(population),
        }
        gw = await start_gateway(settings, adapter_settings=supplied)
        assert gw.inbound is not None
        pay_sim.set_knobs(callback_url=gw.inbound.url + demo_payment.settings(pay_sim).callback_path)
        commands_topic = input_topic("postal", settings.topics)
        postal_events = output_topic("postal", settings.topics)
        tax_commands_topic = input_topic("tax", settings.topics)
        tax_events = output_topic("tax", settings.topics)
        if serve:
            print(json.dumps({
                "bootstrap_servers": bootstrap,
                "metrics_url": gw.metrics_url,
                "input_topic": DOSSIER_EVENTS,
                "result_topic": SYNC_RESULTS,
                "dead_letter_topic": dead_letter_topic(DOSSIER_EVENTS, "national_portal"),
                "commands_topics": {"postal": commands_topic, "tax": tax_commands_topic},
                "partner_events_topics": {"postal": postal_events, "tax": tax_events},
                "simulators": {"national_portal": portal_url, "postal": postal_url, "tax": tax_office.endpoint_url},
                "database_url": settings.database_url,
                # What `gateway check` needs to check this demo (its throw-away credentials and keys).
                "check_environment": {
                    "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "GATEWAY_DATABASE_URL": settings.database_url,
                    "GATEWAY_ADAPTERS": json.dumps(ADAPTERS),
                    **{k: v for adapter in supplied.values() for k, v in settings_environment(adapter).items()},
                },
            }), flush=True)
        watcher = ResultWatcher(bootstrap, "national_portal")
        await watcher.start()
        postal_watcher = PostalWatcher(bootstrap, postal_events)
        await postal_watcher.start()
        tax_watcher = TaxWatcher(bootstrap, tax_events)
        await tax_watcher.start()
        pay_watcher = PaymentWatcher(bootstrap, output_topic("payment", settings.topics))
        await pay_watcher.start()
        report = DemoReport(dossiers=dossiers, events_produced=0)
        if dossiers > 0:
            report = await _drive(
                dossiers, seed, bootstrap, gw, sim, watcher, console, timeout_s,
                _Postal(post, postal_watcher, commands_topic), _Tax(tax_office, tax_watcher, tax_commands_topic),
                _Payment(pay_sim, pay_watcher, input_topic("payment", settings.topics)), fee_payments=fee_payments,
                ahead=ahead,
            )
            report.population = await demo_population.run(
                bootstrap, input_topic("population_db", settings.topics), population, seed
            )
            _print_summary(console, report)
            if report_file is not None:
                report_file.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")  # noqa: ASYNC240
        if metrics_file is not None:  # what Prometheus would scrape at the end of the run
            await gw.refresh_index_metrics()
            metrics_file.write_bytes(generate_latest(gw.metrics.registry))  # noqa: ASYNC240
        if serve:
            await _wait_for_signal()
        return 0 if (dossiers == 0 or _succeeded(report)) else 1
    finally:
        if pay_watcher is not None:
            await pay_watcher.stop()
        await pay_sim.stop()
        if tax_watcher is not None:
            await tax_watcher.stop()
        if postal_watcher is not None:
            await postal_watcher.stop()
        if watcher is not None:
            await watcher.stop()
        if gw is not None:
            await gw.stop()
        if tax_sim is not None:
            await tax_sim.stop()
        await post.stop()
        await population.stop()
        await sim.stop()
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(keys_dir, ignore_errors=True)


def _succeeded(report: DemoReport) -> bool:
    postal, tax = report.postal, report.tax
    return (
        report.converged and report.lost == 0
        and postal.converged and postal.lost == 0 and not postal.second_effects
        and tax.converged and tax.lost == 0 and not tax.second_submissions
        and report.population.converged and not report.population.addresses_leaked
        and report.payment.lost == 0 and report.payment.confirmed_twice == 0
    )


@dataclass
class _Postal:
    """The postal side of a run: its simulator, what reads its topic, where its commands go."""

    sim: PostalSimulator
    watcher: PostalWatcher
    commands_topic: str


@dataclass
class _Payment:
    """The payment side of a run: its simulator, what reads its topic, where its fee requests go."""

    sim: PaymentSimulator
    watcher: PaymentWatcher
    commands_topic: str


@dataclass
class _Tax:
    """The tax side of a run: its simulator, what reads its topic, where its commands go."""

    sim: TaxSimulator
    watcher: TaxWatcher
    commands_topic: str


async def _drive(
    dossiers: int, seed: int, bootstrap: str, gw: Gateway, sim: PortalSimulator, watcher: ResultWatcher,
    console: Console, timeout_s: float | None, postal: _Postal, tax: _Tax, payment: _Payment, *,
    fee_payments: bool = True, ahead: int = AHEAD,
) -> DemoReport:
    journeys = generate_journeys(dossiers, seed=seed)
    events = interleave(journeys)
    commands = postal_commands(journeys, seed=seed)
    postal.sim.fail_orders, postal.sim.unknown_status_orders = demo_postal.troubled_orders(commands, seed)
    forms = tax_commands(journeys, seed=seed, organisations=True)
    tax.sim.set_knobs(silent_dossiers=demo_tax.silent_dossiers(forms, seed))
    items = demo_postal.schedule(events, DOSSIER_EVENTS, commands, postal.commands_topic)
    items = demo_tax.schedule(items, forms, tax.commands_topic)
    # A fee request, after its events, for every dossier whose applicant pays online (the journey says so: about
    # one in eight); its citizen pays once the request reached them.
    online = [j.dossier_code for j in journeys if j.final_snapshot.online_payment is not None]
    fees = demo_payment.fee_commands(online) if fee_payments else []
    items += [(payment.commands_topic, code.encode(), value, cid) for code, value, cid in fees]
    payer = demo_payment.Payer(payment.sim, payment.watcher, seed)
    report = DemoReport(dossiers=dossiers, events_produced=len(events))
    metrics = gw.metrics
    started = time.perf_counter()
    deadline = started + (timeout_s if timeout_s is not None else 120 + len(items) / 50)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        produced = progress.add_task("produced", total=len(items), info="")
        synced_task = progress.add_task("synced", total=len(events), info="")
        postal_task = progress.add_task("postal", total=len(commands), info="")
        tax_task = progress.add_task("tax", total=len(forms), info="")
        pay_task = progress.add_task("payment", total=len(fees), info="")
        producer = asyncio.create_task(
            _produce(bootstrap, items, watcher, lambda n: progress.advance(produced, n), ahead)
        )
        while True:
            await asyncio.sleep(0.5)
            report.events_in = int(_adapter_total(metrics.events_in, "national_portal"))
            report.retried = int(_adapter_total(metrics.retries, "national_portal"))
            done = sum(watcher.outcomes.values()) + watcher.dead_letters
            progress.update(
                synced_task, completed=done,
                info=f"in {report.events_in}  synced {watcher.outcomes['synced']}  retried {report.retried}  "
                f"dead-lettered {watcher.dead_letters}",
            )
            orders = len(postal.sim.orders)
            progress.update(
                postal_task, completed=len(postal.watcher.answers),
                info=f"answered {len(postal.watcher.answers)}  orders {orders}  "
                f"final {orders - demo_postal.not_final(postal.sim)}  events {len(postal.watcher.events)}",
            )
            tax_done, tax_info = demo_tax.progress(forms, tax.sim, tax.watcher)
            progress.update(tax_task, completed=tax_done, info=tax_info)
            payer.pay_ready(fees)
            stats = payment.sim.stats
            progress.update(pay_task, completed=len(payer.paid), info=f"paid {stats['paid']}  callbacks lost "
                            f"{stats['callbacks_lost']}  inquiries {stats['inquiries']}")
            if (
                producer.done() and done >= len(events)
                and demo_postal.settled(commands, postal.sim, postal.watcher)
                and demo_tax.settled(forms, tax.sim, tax.watcher)
                and payer.settled(fees)
            ):
                lost = count_lost(journeys, sim.dossiers)
                if not lost:
                    report.converged = True
                    break
            if time.perf_counter() > deadline:
                break
        if not producer.done():  # the deadline passed with events still held back (AHEAD): the run has failed
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
    report.duration_s = round(time.perf_counter() - started, 2)
    lost = count_lost(journeys, sim.dossiers)
    report.lost = len(lost)
    report.lost_examples = lost[:10]
    report.synced = watcher.outcomes["synced"]
    report.rejected = watcher.outcomes["rejected"]
    report.stale_dropped = watcher.outcomes["stale_dropped"]
    report.dead_lettered = watcher.dead_letters
    report.duplicate_effects = int(sim.stats["duplicate_effects"])
    report.sync_delay_p50_ms = round(_percentile(watcher.delays_ms, 50), 1)
    report.sync_delay_p99_ms = round(_percentile(watcher.delays_ms, 99), 1)
    report.events_per_s = round(report.events_in / report.duration_s, 1) if report.duration_s else 0.0
    report.postal = demo_postal.report(commands, postal.sim, postal.watcher)
    report.postal.commands_in = int(_adapter_total(metrics.events_in, "postal"))
    report.postal.retried = int(_adapter_total(metrics.retries, "postal"))
    report.tax = demo_tax.report(forms, tax.sim, tax.watcher)
    report.tax.commands_in = int(_adapter_total(metrics.events_in, "tax"))
    report.tax.retried = int(_adapter_total(metrics.retries, "tax"))
    report.payment = demo_payment.report(payment.sim, payment.watcher, {code: cid for code, _v, cid in fees})
    # The portal's convergence is judged alone, as before; the postal and tax parts have their own.
    report.converged = report.lost == 0 and done >= len(events)
    return report


def _print_summary(console: Console, report: DemoReport) -> None:
    table = Table(title="Demo summary: one-stop system → gateway → national portal", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    ok = "[green]" if report.lost == 0 and report.converged else "[red]"
    rows = [
        ("dossiers", report.dossiers, "generated journeys"),
        ("events produced", report.events_produced, "lifecycle events written to the input topic"),
        ("events in", report.events_in, "records the portal adapter consumed: lifecycle events and the partner "
         "events it reacts to (redeliveries count again)"),
        ("synced", report.synced, "accepted by the portal"),
        ("stale dropped", report.stale_dropped, "older than what the portal already had"),
        ("rejected", report.rejected, "refused by the portal (see dead letters)"),
        ("dead-lettered", report.dead_lettered, "parked in the dead-letter topic with the reason"),
        ("retried", report.retried, "in-process retries after a retryable failure"),
        ("lost", f"{ok}{report.lost}", "dossiers whose portal state differs from the source"),
        ("duplicate effects", report.duplicate_effects, "second effects seen by the portal simulator"),
        ("sync delay p50 / p99", f"{report.sync_delay_p50_ms} / {report.sync_delay_p99_ms} ms", "published → synced"),
        ("duration", f"{report.duration_s} s", f"{report.events_per_s} events/s"),
    ]
    for name, value, meaning in rows:
        table.add_row(name, str(value), meaning)
    console.print(table)
    _print_postal(console, report.postal)
    demo_tax.print_report(console, report.tax)
    demo_population.print_report(console, report.population)
    demo_payment.print_report(console, report.payment)


def _print_postal(console: Console, postal: PostalReport) -> None:
    table = Table(title="Demo summary: one-stop system → gateway → postal service", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    ok = "[green]" if postal.lost == 0 and postal.converged else "[red]"
    once = "[green]" if postal.second_effects == 0 else "[red]"
    by_type = ", ".join(f"{kind.removeprefix('postal.')} {n}" for kind, n in sorted(postal.commands_by_type.items()))
    answered = postal.answered
    rows: list[tuple[str, object, str]] = [
        ("commands sent", postal.commands_sent, by_type or "none"),
        ("commands in", postal.commands_in, "records the gateway consumed (redeliveries count again)"),
        ("answered", sum(answered.values()),
         f"done {answered.get('done', 0)}, rejected {answered.get('rejected', 0)}, "
         f"dead-lettered {answered.get('dead_lettered', 0)}"),
        ("retried", postal.retried, "in-process retries after a retryable failure"),
        ("orders created", postal.orders_created, "effects at the postal simulator"),
        ("second effects", f"{once}{postal.second_effects}", "a create or cancel applied twice at the simulator"),
        ("orders final", f"{postal.orders_final} / {postal.orders_final + postal.orders_not_final}",
         "delivered, returned or cancelled at the simulator"),
        ("tracking records", postal.tracking_records, "in the simulator's feed (one event each)"),
    ]
    for kind in postal.events:
        unique, raw = postal.events[kind], postal.events_raw.get(kind, 0)
        rows.append((f"  {kind.removeprefix('postal.')}", f"{unique} ({raw})", "events, de-duplicated (raw)"))
    rows += [
        ("events", f"{postal.events_unique} ({postal.events_raw_total})",
         "on the topic, de-duplicated by event_id (raw: repeats included)"),
        ("unknown statuses", postal.unknown_statuses, "status codes the mapping does not know, published as such"),
        ("lost", f"{ok}{postal.lost}",
         f"unanswered commands {postal.unanswered} + final states missing from the topic {postal.finals_missing}"),
    ]
    for name, value, meaning in rows:
        table.add_row(name, str(value), meaning)
    console.print(table)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


__all__ = ["DemoReport", "count_lost", "expected_portal_view", "interleave", "run_demo"]
