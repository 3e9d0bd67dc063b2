"""The payment scenario of the fault matrix: fee requests, citizens paying, the platform's signed callbacks (one
dossier's lost, so the inquiry follow-up finds its outcome), one bill refused, one unreadable command, one
command delivered twice; run in `gateway run` children with one fault armed (tests/faults/harness.py).

What must hold whatever the fault (in the command path, the callback path or the inquiry):
- one terminal answer per command, the expected one; the unreadable one answered invalid and dead-lettered;
- one transaction at the platform per command answered done, none for the refused bill;
- per transaction one payment.requested id, and exactly one outcome event id whose type is what the platform
  says (confirmed for paid, failed for refused by the bank); every repeat of it byte-for-byte the same facts;
- every callback the platform sent was in the end acknowledged (none answered ok and lost: its outcome is on the
  topic), every inbound record published, no follow-up pending, the ledger verifies, nothing parked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.payment.mapping import transaction_id
from adapters.payment.simulator import PaymentSimulator
from tests.integration.payment_harness import CLIENT_ID, KEY_1, KEY_2, command
from tests.integration.postal_harness import dossier

PAYMENT = "payment"
PAYMENT_UNREADABLE = b'{"event_type": "payment.collect_fees", "note": "an unreadable fee request"}'
PAYMENT_UNREADABLE_PART = "an unreadable fee request"
DAY = "240126"
_OUTCOME = {"0": "payment.confirmed", "2": "payment.failed"}


@dataclass
class PaymentScenario:
    """- `paid`: paid, its callback delivered (duplicated); its command delivered twice;
    - `lost`: paid, every callback lost: the inquiry follow-up finds it;
    - `failed`: the bank refuses the payment, callback delivered;
    - `refused`: the platform refuses the bill (rejected, dead-lettered, no transaction);
    - one unreadable command."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    allowed: dict[str, set[str]] = field(default_factory=dict)
    dead_lettered: set[str] = field(default_factory=set)
    order: dict[str, tuple[str, int]] = field(default_factory=dict)
    pays: dict[str, bool] = field(default_factory=dict)  # dossier -> paid (True) or refused by the bank (False)
    lost: str = ""
    refused: str = ""
    unreadable_key: bytes = b""


def build_payment(seed: int = 7) -> PaymentScenario:
    paid, lost, failed, refused, unreadable = (dossier(n, day=DAY) for n in range(1, 6))
    s = PaymentScenario(pays={paid: True, lost: True, failed: False}, lost=lost, refused=refused,
                        unreadable_key=unreadable.encode())
    made: dict[str, bytes] = {}
    for code in (paid, lost, failed, refused):
        command_id = uuid.uuid5(uuid.NAMESPACE_URL, f"faults/payment/{seed}/{code}")
        made[code] = command(code, event_id=command_id)
        cid = str(command_id)
        s.order[cid] = (code, 0)
        s.allowed[cid] = {"rejected"} if code == refused else {"done"}
        if code == refused:
            s.dead_lettered.add(cid)
        s.records.append((code.encode(), made[code]))
    s.records.append((s.unreadable_key, PAYMENT_UNREADABLE))
    s.records.append((paid.encode(), made[paid]))  # delivered again, unchanged
    return s


def payment_env(sim: PaymentSimulator, inbound_port: int) -> dict[str, str]:
    return {
        "GATEWAY_PAYMENT_BASE_URL": sim.base_url, "GATEWAY_PAYMENT_CLIENT_ID": CLIENT_ID,
        "GATEWAY_PAYMENT_KEY_1": KEY_1, "GATEWAY_PAYMENT_KEY_2": KEY_2,
        "GATEWAY_PAYMENT_RETURN_URL": "https://dichvucong.example.vn/done", "GATEWAY_PAYMENT_BANK_BIN": "970415",
        "GATEWAY_PAYMENT_ACCOUNT": "113366668888", "GATEWAY_PAYMENT_TIMEOUT_S": "2.0",
        "GATEWAY_PAYMENT_INQUIRY_AFTER_S": "1.0", "GATEWAY_PAYMENT_INQUIRY_INTERVAL_S": "0.5",
        "GATEWAY_PAYMENT_EXPIRE_AFTER_S": "3600",
        # One port for every child of the case: the platform calls back where the first one listened.
        "GATEWAY_INBOUND__PORT": str(inbound_port), "GATEWAY_INBOUND__DURABLE_TIMEOUT_S": "2.0",
    }


class PaymentRun:
    """What one payment case drives and inspects (the harness's _Driven / _CommandsRun)."""

    def __init__(self, case: Any, workdir: Path, collector: Any, topics: Any, parking: Any, followups: Any,
                 engine: Any, inbound_port: int) -> None:
        self.case = case
        self.workdir = workdir
        self.scenario = build_payment()
        self.topics = topics
        self.collector = collector
        self.parking = parking
        self.followups = followups
        self.engine = engine
        s = self.scenario
        self.sim = PaymentSimulator(client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2, seed=5, callback_duplicates=1,
                                    callback_retries=200, callback_retry_s=0.1, reject_dossiers=[s.refused],
                                    lose_dossiers=[s.lost])
        self.inbound_port = inbound_port
        self.paid: set[str] = set()

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]:
        return self.scenario.records

    def _requested(self) -> set[str]:
        return {m["dossier_code"] for _raw, m in self.collector.partner if m["event_type"] == "payment.requested"}

    def _outcomes(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for _raw, m in self.collector.partner:
            if m["event_type"] in ("payment.confirmed", "payment.failed", "payment.expired"):
                out[m["transaction_id"]].add(m["event_type"])
        return out

    def _answered(self) -> bool:
        s = self.scenario
        seen = {str(r["source_event_id"]) for r in self.collector.results}
        dead = self.collector.dead_event_ids()
        return (all(i in seen for i in s.allowed) and all(dead.get(i) for i in s.dead_lettered)
                and dead.get("<malformed>", 0) > 0 and bool(self.collector.invalid))

    def _settled(self) -> bool:
        sim, outcomes = self.sim, self._outcomes()
        for code in self.scenario.pays:
            txn = transaction_id(code, "FR-1")
            t = sim.transactions.get(txn)
            if t is None or t.status == "1" or txn not in outcomes:
                return False
            if code != self.scenario.lost and not t.callbacks_acked:
                return False
        return True

    async def _pending(self) -> int:
        try:
            return int(await self.followups.pending(PAYMENT))
        except Exception:
            return -1

    async def until_done(self, deadline: float, child: subprocess.Popen[bytes] | None = None) -> bool:
        while time.monotonic() < deadline:
            for code in self._requested() - self.paid:  # the citizen pays once the request reached them
                if code in self.scenario.pays:
                    self.sim.pay(transaction_id(code, "FR-1"), paid=self.scenario.pays[code])
                    self.paid.add(code)
            if self._answered() and self._settled() and await self._pending() == 0:
                return True
            if child is not None and child.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def progress(self) -> str:
        seen = {str(r["source_event_id"]) for r in self.collector.results}
        return (f"{sum(i not in seen for i in self.scenario.allowed)} commands unanswered, paid {sorted(self.paid)}, "
                f"outcomes {dict(self._outcomes())}, simulator {self.sim.stats}")


def payment_events(run: PaymentRun) -> list[str]:
    """Per transaction: one requested id, one outcome id of the platform's kind, repeats identical; none for the
    refused bill; one transaction per done command at the platform."""
    s, sim = run.scenario, run.sim
    problems: list[str] = []
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    bodies: dict[str, set[str]] = defaultdict(set)
    for _raw, m in run.collector.partner:
        kind = m["event_type"]
        ids[(m["transaction_id"], "requested" if kind == "payment.requested" else "outcome")].add(str(m["event_id"]))
        if kind != "payment.requested":
            body = {k: v for k, v in m.items() if k != "occurred_at"}
            bodies[m["transaction_id"]].add(json.dumps(body, sort_keys=True))
    expected = {transaction_id(code, "FR-1") for code in (*s.pays, )}
    created = set(sim.transactions)
    if created != expected:
        problems.append(f"transactions at the platform {sorted(created)}, expected {sorted(expected)}")
    for code, pays in s.pays.items():
        txn = transaction_id(code, "FR-1")
        if len(ids[(txn, "requested")]) != 1:
            problems.append(f"{code}: payment.requested under {len(ids[(txn, 'requested')])} ids")
        if len(ids[(txn, "outcome")]) != 1:
            problems.append(f"{code}: outcome under {len(ids[(txn, 'outcome')])} ids")
        kinds = {json.loads(b)["event_type"] for b in bodies[txn]}
        want = _OUTCOME["0" if pays else "2"]
        if kinds != {want}:
            problems.append(f"{code}: outcome {sorted(kinds)}, the platform says {want}")
        if len({json.dumps({k: v for k, v in json.loads(b).items() if k != 'via'}) for b in bodies[txn]}) > 1:
            problems.append(f"{code}: its outcome was published with different facts")
        t = sim.transactions.get(txn)
        if t is not None and code != s.lost and 200 not in t.callbacks:
            problems.append(f"{code}: the platform's callback was never acknowledged")
    refused = transaction_id(s.refused, "FR-1")
    if ids[(refused, "requested")] or ids[(refused, "outcome")]:
        problems.append("the refused bill has payment events")
    return problems


async def inbound_rows(run: PaymentRun) -> list[str]:
    from gateway.store.inbound import InboundStore

    rows = await InboundStore(run.engine).all(PAYMENT)
    # A record a callback made is marked once published; one the inquiry made is published by the follow-up
    # runner (before its row completes) and stays unmarked: either way its event must be on the topic.
    on_topic = {str(m["event_id"]) for _raw, m in run.collector.partner}
    problems = [f"inbound record {r.fact.record_key}: its event is not on the topic" for r in rows
                if json.loads(r.fact.event_value)["event_id"] not in on_topic]
    problems += [f"inbound record {r.fact.record_key} of a callback never marked published" for r in rows
                 if r.fact.source == "callback" and not r.published]
    keys = {r.fact.record_key for r in rows}
    expected = {f"outcome:{transaction_id(code, 'FR-1')}" for code in run.scenario.pays}
    if keys != expected:
        problems.append(f"inbound records {sorted(keys)}, expected {sorted(expected)}")
    pending = await run.followups.pending(PAYMENT)
    if pending:
        problems.append(f"{pending} payment follow-ups still pending")
    return problems
