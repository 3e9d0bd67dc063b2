"""The payment demo: fee requests for dossiers, citizens paying, the platform's callbacks lost at random and
recovered by the gateway's inquiry; judged from outside (the simulator against the payment events topic).

    python -m gateway.demo.payment [--fees 200] [--loss 0.3] [--seed 7]

Embedded broker, the payment platform simulator, an in-process gateway with its inbound listener. Each fee
request's citizen pays (one in ten is refused by the bank); the simulator drops `loss` of the callbacks, sends
the rest once more (duplicates) in shuffled order. The summary's `lost` (a paid or refused transaction whose
outcome the topic does not carry, or a command never answered) and `confirmed twice` (a transaction with two
outcome events, or two confirmations that differ) must both be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from adapters.payment.mapping import transaction_id
from adapters.payment.settings import PaymentSettings
from adapters.payment.simulator import PaymentSimulator
from contracts.export import examples
from gateway.bootstrap import start_gateway
from gateway.demo.watch import EventsWatcher
from gateway.embedded_broker import EmbeddedBroker
from gateway.plugins import input_topic, output_topic
from gateway.settings import FollowUpSettings, GatewaySettings, HttpSettings, InboundSettings, KafkaSettings

PARTNER = "payment"
CLIENT_ID, KEY_1, KEY_2 = "demo-province", "demo-key-one-0123456789", "demo-key-two-9876543210"
OUTCOMES = ("payment.confirmed", "payment.failed", "payment.expired")


@dataclass
class PaymentReport:
    fees: int = 0
    answered: int = 0
    transactions: int = 0
    paid: int = 0
    refused_by_bank: int = 0
    callbacks_lost: int = 0
    callbacks_sent: int = 0
    callbacks_acked: int = 0
    inquiries: int = 0
    confirmed: int = 0
    confirmed_via_inquiry: int = 0
    failed: int = 0
    outcome_records: int = 0
    confirmed_twice: int = 0
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)


class PaymentWatcher(EventsWatcher):
    """Every outcome record per transaction (repeats included, to tell a repeat from a second outcome)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, PARTNER)
        self.outcomes: dict[str, list[dict[str, Any]]] = {}

    def on_event(self, kind: str, body: dict[str, Any]) -> None:
        if kind in OUTCOMES:
            self.outcomes.setdefault(body["transaction_id"], []).append(body)


def _command(code: str, n: int) -> bytes:
    doc = examples(PARTNER)["payment.collect_fees"]
    doc.update(event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo/payment/{code}")), dossier_code=code,
               fee_request_id=f"FR-{n}")
    return json.dumps(doc, ensure_ascii=False).encode()


def report(sim: PaymentSimulator, watcher: PaymentWatcher, commands: dict[str, str]) -> PaymentReport:
    out = PaymentReport(fees=len(commands), answered=sum(1 for c in commands.values() if c in watcher.answers))
    out.transactions = len(sim.transactions)
    stats = sim.stats
    out.paid, out.refused_by_bank = stats["paid"], stats["failed"]
    out.callbacks_lost, out.callbacks_sent, out.callbacks_acked = (
        stats["callbacks_lost"], stats["callbacks_sent"], stats["callbacks_acked"])
    out.inquiries = stats["inquiries"]
    lost = [c for c, cid in commands.items() if cid not in watcher.answers]
    for txn, t in sim.transactions.items():
        records = watcher.outcomes.get(txn, [])
        ids = {r["event_id"] for r in records}
        kinds = {r["event_type"] for r in records}
        out.outcome_records += len(records)
        if len(ids) > 1 or len(kinds) > 1 or len({json.dumps(r, sort_keys=True) for r in records}) > 1:
            out.confirmed_twice += 1
        want = {"0": "payment.confirmed", "2": "payment.failed"}.get(t.status)
        if want is not None and kinds != {want}:
            lost.append(t.dossier_code)
        if kinds == {"payment.confirmed"}:
            out.confirmed += 1
            out.confirmed_via_inquiry += records[0]["via"] == "inquiry"
        elif kinds == {"payment.failed"}:
            out.failed += 1
    out.lost, out.lost_examples = len(lost), lost[:10]
    return out


def print_report(console: Console, r: PaymentReport) -> None:
    table = Table(title="Demo summary: fees → gateway → payment platform")
    for column in ("figure", "value", "meaning"):
        table.add_column(column)
    ok = "[green]" if r.lost == 0 else "[red]"
    once = "[green]" if r.confirmed_twice == 0 else "[red]"
    rows: list[tuple[str, object, str]] = [
        ("fee requests", r.fees, f"answered {r.answered}; transactions at the platform {r.transactions}"),
        ("paid / refused", f"{r.paid} / {r.refused_by_bank}", "citizens who paid / bank refusals"),
        ("callbacks", f"{r.callbacks_sent} sent, {r.callbacks_lost} lost", f"acknowledged {r.callbacks_acked}"),
        ("confirmed", r.confirmed, f"of which through inquiry {r.confirmed_via_inquiry} (inquiries {r.inquiries})"),
        ("failed", r.failed, "payment.failed"),
        ("outcome records", r.outcome_records, "on the topic, repeats of the same event included"),
        ("confirmed twice", f"{once}{r.confirmed_twice}", "a transaction with two different outcome events"),
        ("lost", f"{ok}{r.lost}", "a command unanswered, or a platform outcome the topic does not carry"),
    ]
    for name, value, meaning in rows:
        table.add_row(name, str(value), meaning)
    console.print(table)


LOSS = 0.3  # of the callbacks, lost at random in `gateway demo`
BANK_REFUSES = 0.1  # of the payments


def simulator(seed: int, loss: float = LOSS) -> PaymentSimulator:
    """The platform: callbacks lost at random, the rest sent twice in shuffled order."""
    return PaymentSimulator(client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2, seed=seed, callback_loss=loss,
                            callback_duplicates=1, callback_reorder=True, callback_retry_s=0.2)


def settings(sim: PaymentSimulator) -> PaymentSettings:
    """The payment adapter's settings for the simulator (started), inquiry after 3 s."""
    return PaymentSettings(
        base_url=sim.base_url, client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2,
        return_url="https://dichvucong.example.vn/thanhtoan/xong", bank_bin="970415", account="113366668888",
        inquiry_after_s=3.0, inquiry_interval_s=2.0, expire_after_s=600.0)


def fee_commands(codes: list[str]) -> list[tuple[str, bytes, str]]:
    """(dossier, command, command id): one fee request per dossier."""
    out = []
    for n, code in enumerate(codes, start=1):
        value = _command(code, n)
        out.append((code, value, json.loads(value)["event_id"]))
    return out


class Payer:
    """The citizens: each pays once their request reached them (one in ten refused by the bank)."""

    def __init__(self, sim: PaymentSimulator, watcher: PaymentWatcher, seed: int) -> None:
        self.sim, self.watcher = sim, watcher
        self.random = random.Random(seed)
        self.paid: set[str] = set()

    def pay_ready(self, commands: list[tuple[str, bytes, str]]) -> None:
        for n, (code, _value, command_id) in enumerate(commands, start=1):
            txn = transaction_id(code, f"FR-{n}")
            if txn in self.sim.transactions and txn not in self.paid and command_id in self.watcher.answers:
                self.paid.add(txn)
                self.sim.pay(txn, paid=self.random.random() >= BANK_REFUSES)

    def settled(self, commands: list[tuple[str, bytes, str]]) -> bool:
        return len(self.paid) == len(commands) and report(self.sim, self.watcher, {
            code: cid for code, _v, cid in commands}).lost == 0


async def run(fees: int = 200, loss: float = 0.3, seed: int = 7, timeout_s: float = 180.0,
              console: Console | None = None, report_file: Path | None = None) -> int:
    console = console or Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-demo-payment-"))
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    sim = simulator(seed, loss)
    gw = watcher = None
    try:
        await sim.start()
        settings_ = GatewaySettings(
            adapters=[PARTNER], database_url=f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
            kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=4), http=HttpSettings(port=0),
            inbound=InboundSettings(port=0),
            followups=FollowUpSettings(scan_interval_s=0.2, concurrency=32, batch=64, claim_s=15.0,
                                       backoff_initial_s=0.5, backoff_max_s=2.0),
        )
        supplied = {PARTNER: settings(sim)}
        gw = await start_gateway(settings_, adapter_settings=supplied)
        assert gw.inbound is not None
        sim.set_knobs(callback_url=gw.inbound.url + supplied[PARTNER].callback_path)
        watcher = PaymentWatcher(bootstrap, output_topic(PARTNER, settings_.topics))
        await watcher.start()
        made = fee_commands([f"000.00.01.H34-240125-{n:04d}" for n in range(1, fees + 1)])
        commands = {code: cid for code, _value, cid in made}
        payer = Payer(sim, watcher, seed)
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for code, value, _cid in made:
                await producer.send(input_topic(PARTNER, settings_.topics), value, key=code.encode())
            await producer.flush()
        finally:
            await producer.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and not payer.settled(made):
            payer.pay_ready(made)
            await asyncio.sleep(0.5)
        final = report(sim, watcher, commands)
        print_report(console, final)
        if report_file is not None:
            await asyncio.to_thread(report_file.write_text, json.dumps(asdict(final), indent=2) + "\n", "utf-8")
        return 0 if final.lost == 0 and final.confirmed_twice == 0 and len(payer.paid) == fees else 1
    finally:
        if watcher is not None:
            await watcher.stop()
        if gw is not None:
            await gw.stop()
        await sim.stop()
        await asyncio.to_thread(broker.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo.payment", description=__doc__.splitlines()[0])
    parser.add_argument("--fees", type=int, default=200)
    parser.add_argument("--loss", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.fees, args.loss, args.seed, report_file=args.report))


if __name__ == "__main__":
    sys.exit(main())
