"""The population database adapter's fixtures for the shared contract suite.

Its inputs are `population.lookup` requests about citizens of the simulator's synthetic population, one per
dossier, each on behalf of an agency named like its dossier (so the simulator can refuse one dossier's lookups:
KHONG_DUOC_PHEP for that MaDonVi). Its answers are the replies on the reply topic the requests name (registered
with the suite's readers, tests/contract/checks.py REPLY_TOPICS): match → succeeded; the failure replies the
pipeline words say rejected or dead_lettered. Its effects are the requests the simulator answered, by MaYeuCau: a
lookup is a read, and the same MaYeuCau again is recognisably the same request (not a second effect); a second
effect is an answered MaYeuCau no input asked for. Dead letters keep a redacted copy of each record.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.population_db.handlers import redact
from adapters.population_db.mapping import request_id
from adapters.population_db.simulator import PopulationSimulator
from contracts.population import PARTNER
from contracts.topics import partner_events_topic
from tests.contract.adapter_contract import SCHEMAS, Answer, Input, Inputs, Outcome, PartnerContract
from tests.contract.checks import REPLY_TOPICS
from tests.integration.population_harness import ACCESS_KEY, lookup, population_settings
from tests.integration.postal_harness import dossier

MAX_IN_FLIGHT: Final = 4


class PopulationContract(PartnerContract[PopulationSimulator]):
    name = PARTNER

    def __init__(self) -> None:
        super().__init__()
        self.reply_topic = f"onestop.replies.contract-{uuid.uuid4().hex[:8]}"
        self._expected: set[str] = set()  # MaYeuCau of every input
        self._schema: Path | None = None
        REPLY_TOPICS.clear()  # one population contract at a time in a process: this one's replies
        REPLY_TOPICS[partner_events_topic(PARTNER) + "."] = (self.reply_topic,)

    @property
    def output_schema(self) -> Path:
        """The replies' and the partner events topic's published schemas, as one (each keeps its own $id)."""
        if self._schema is None:
            combined = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "anyOf": [json.loads((SCHEMAS / name).read_text("utf-8"))
                          for name in ("population-reply.v1.json", "population-event.v1.json")],
            }
            self._schema = Path(tempfile.mkdtemp(prefix="contract-population-")) / "population-output.json"
            self._schema.write_text(json.dumps(combined), encoding="utf-8")
        return self._schema

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = PopulationSimulator(size=300, **knobs)
        return await self.sim.start()

    def inputs(self, count: int, seed: int) -> Inputs:
        assert 0 < count < 100, "dossier numbers are <seed % 100><two digits>"
        people = self.simulator.some(300)
        items = []
        for n in range(1, count + 1):
            code = dossier((seed % 100) * 100 + n)
            event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"contract/population/{seed}/{code}")
            person = people[(seed * 7 + n) % len(people)]
            value = lookup(person, reply_topic=self.reply_topic, dossier=code, agency=code, event_id=event_id)
            items.append(Input(code, str(event_id), code.encode(), value))
            self._expected.add(request_id(event_id))
        return Inputs(tuple(items))

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        if message.get("event_type") != "population.lookup_reply":
            return None
        raw = str(message["outcome"])
        if raw in ("match", "mismatch", "not_found"):
            outcome = Outcome.SUCCEEDED
        elif raw == "failure":
            outcome = Outcome.REJECTED if str(message.get("reason", "")).startswith("rejected") else (
                Outcome.DEAD_LETTERED)
        else:
            raise AssertionError(f"a contract input answered {raw}: {message.get('reason')}")
        return Answer(str(message["event_id"]), str(message["source_event_id"]), outcome, raw)

    def undelivered(self, inputs: Inputs) -> list[str]:
        answered = self.simulator.answered
        return [i.dossier for i in inputs.items if request_id(uuid.UUID(i.event_id)) not in answered]

    def effects(self) -> int:
        return len(self.simulator.answered)

    def duplicate_effects(self) -> int:
        return sum(1 for rid in self.simulator.answered if rid not in self._expected)

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        if retryable:
            self.simulator.set_knobs(outage=True)
        else:
            self.simulator.set_knobs(refuse_agencies=list(dossiers or []))

    def heal(self) -> None:
        self.simulator.set_knobs(outage=False, refuse_agencies=[])

    def dead_letter_value(self, value: bytes) -> bytes:
        return redact(value)

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        return {self.name: population_settings(self.simulator, timeout_s=2.0)}

    def environment(self, base_url: str) -> dict[str, str]:
        return {
            "GATEWAY_POPULATION_DB_BASE_URL": self.simulator.endpoint_url,
            "GATEWAY_POPULATION_DB_USERNAME": "gateway",
            "GATEWAY_POPULATION_DB_SECRET": "ndxp-secret",
            "GATEWAY_POPULATION_DB_SERVICE_CODE": "1.004227",
            "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY": ACCESS_KEY,
            "GATEWAY_POPULATION_DB_TIMEOUT_S": "2.0",
            "GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        }
