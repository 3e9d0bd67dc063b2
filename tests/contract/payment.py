"""The payment adapter's fixtures for the shared contract suite.

Its inputs are `payment.collect_fees` commands built from the published example, one per dossier (fee request
FR-1, so one transaction id per dossier). Its effects are the simulator's created transactions; the simulator
never creates one transaction id twice (a repeat is answered with the same payment URL), so a second effect is a
transaction no input asked for. It fails retryably with an outage (HTTP 503) and for good by refusing dossiers'
bills (error 07).

Its follow-up: no callback comes in the suite (the simulator is given no callback URL), so the gateway asks
(inquiry) until the payer pays: `answer()` pays every pending transaction, and the inquiry reports
payment.confirmed, under the transaction's one outcome id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.payment.mapping import transaction_id
from adapters.payment.simulator import PaymentSimulator
from contracts.payment import OUTCOME_FACT, PARTNER, payment_event_id
from tests.contract.adapter_contract import (
    SCHEMAS,
    Answer,
    FollowUpEntry,
    Input,
    Inputs,
    PartnerContract,
    read_answer,
)
from tests.integration.payment_harness import CLIENT_ID, KEY_1, KEY_2, command, payment_settings
from tests.integration.postal_harness import dossier

SCHEDULE: Final[Mapping[str, float]] = {"inquiry_after_s": 0.2, "inquiry_interval_s": 0.3, "expire_after_s": 3600.0}
CONFIRMED: Final = "payment.confirmed"


class InquiryContract:
    """The payment follow-up: ask the platform after a transaction no callback settled."""

    name = "payment.inquiry"
    event_types: frozenset[str] = frozenset({CONFIRMED})

    def __init__(self, contract: PaymentContract) -> None:
        self._contract = contract

    def answer(self) -> int:
        sim = self._contract.simulator
        pending = [t for t, x in sorted(sim.transactions.items()) if x.status == "1"]
        for t in pending:
            sim.pay(t)
        return len(pending)

    def answered(self) -> list[FollowUpEntry]:
        sim = self._contract.simulator
        return [FollowUpEntry(f"paid {t}", CONFIRMED, str(payment_event_id(x.dossier_code, OUTCOME_FACT, t)))
                for t, x in sorted(sim.transactions.items()) if x.status == "0"]

    def answer_of(self, message: Mapping[str, Any]) -> str | None:
        if message.get("event_type") == CONFIRMED:
            return f"paid {message['transaction_id']}"
        return None

    def gave_up(self, message: Mapping[str, Any]) -> bool:
        return message.get("event_type") == "payment.expired"

    def asked(self) -> int:
        return int(self._contract.simulator.stats["inquiries"])


class PaymentContract(PartnerContract[PaymentSimulator]):
    name = PARTNER

    def __init__(self) -> None:
        super().__init__()
        self._expected: set[str] = set()
        self.follow_ups = (InquiryContract(self),)

    @property
    def output_schema(self) -> Path:
        return SCHEMAS / "payment-event.v1.json"

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = PaymentSimulator(client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2, seed=3, **knobs)
        return await self.sim.start()

    def inputs(self, count: int, seed: int) -> Inputs:
        assert 0 < count < 100, "dossier numbers are <seed % 100><two digits>"
        codes = [dossier((seed % 100) * 100 + n) for n in range(1, count + 1)]
        items = []
        for code in codes:
            event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"contract/payment/{seed}/{code}")
            items.append(Input(code, str(event_id), code.encode(), command(code, event_id=event_id)))
        self._expected.update(transaction_id(code, "FR-1") for code in codes)
        return Inputs(tuple(items), detail=codes)

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        return read_answer(self.reads, message)

    def undelivered(self, inputs: Inputs) -> list[str]:
        created = set(self.simulator.transactions)
        return [code for code in inputs.dossiers if transaction_id(code, "FR-1") not in created]

    def effects(self) -> int:
        return int(self.simulator.stats["created"])

    def duplicate_effects(self) -> int:
        return sum(1 for t in self.simulator.transactions if t not in self._expected)

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        if retryable:
            self.simulator.set_knobs(outage=True)
        else:
            self.simulator.set_knobs(reject_dossiers=list(dossiers or []))

    def heal(self) -> None:
        self.simulator.set_knobs(outage=False, reject_dossiers=[])

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        return {self.name: payment_settings(self.simulator, **SCHEDULE).model_copy(update={"base_url": base_url})}

    def environment(self, base_url: str) -> dict[str, str]:
        env = {"GATEWAY_PAYMENT_BASE_URL": base_url, "GATEWAY_PAYMENT_CLIENT_ID": CLIENT_ID,
               "GATEWAY_PAYMENT_KEY_1": KEY_1, "GATEWAY_PAYMENT_KEY_2": KEY_2,
               "GATEWAY_PAYMENT_RETURN_URL": "https://dichvucong.example.vn/done", "GATEWAY_PAYMENT_BANK_BIN": "970415",
               "GATEWAY_PAYMENT_ACCOUNT": "113366668888", "GATEWAY_PAYMENT_TIMEOUT_S": "2.0"}
        # A few commands at a time (as the tax suite does): the platform creates a whole burst of transactions before
        # the gateway has read ten answers, so a kill at the 10th answer would find every one created.
        env["GATEWAY_CONCURRENCY__MAX_IN_FLIGHT"] = "4"
        return env | {f"GATEWAY_PAYMENT_{k.upper()}": str(v) for k, v in SCHEDULE.items()}
