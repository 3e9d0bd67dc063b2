"""The national-portal adapter's fixtures for the shared contract suite."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import PortalSimulator
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import Journey, generate_journeys
from tests.contract.adapter_contract import (
    SCHEMAS,
    Answer,
    Input,
    Inputs,
    PartnerContract,
    read_answer,
)

CREDENTIALS = {"username": "gateway", "password": "secret", "dstcode": "H34", "madonvi": "000.00.00.H55"}


class NationalPortalContract(PartnerContract[PortalSimulator]):
    name = "national_portal"

    def __init__(self) -> None:
        super().__init__()

    @property
    def output_schema(self) -> Path:
        return SCHEMAS / "sync-result.v1.1.json"

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = PortalSimulator(**knobs)
        return await self.sim.start()

    def journeys(self, count: int, seed: int) -> list[Journey]:
        return generate_journeys(count, seed=seed)

    def inputs(self, count: int, seed: int) -> Inputs:
        """The events of `count` dossier journeys, mixed as a live province produces them."""
        journeys = self.journeys(count, seed)
        items = tuple(Input(k.decode(), event_id, k, v) for k, v, event_id in interleave(journeys))
        return Inputs(items, detail=journeys)

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        return read_answer(self.reads, message)

    def undelivered(self, inputs: Inputs) -> list[str]:
        assert self.sim is not None
        journeys: list[Journey] = inputs.detail
        return count_lost(journeys, self.sim.dossiers)

    def effects(self) -> int:
        assert self.sim is not None
        return int(self.sim.stats["records_applied"])

    def duplicate_effects(self) -> int:
        assert self.sim is not None
        return int(self.sim.stats["duplicate_effects"]) + int(self.sim.stats["status_regressions"])

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        assert self.sim is not None
        if retryable:
            self.sim.set_knobs(outage=True)
        else:
            self.sim.set_knobs(reject_dossiers=dossiers or [])

    def heal(self) -> None:
        assert self.sim is not None
        self.sim.set_knobs(outage=False, reject_dossiers=[])

    def in_flight(self) -> int:
        assert self.sim is not None
        return int(self.sim.stats["in_flight"])

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        c = CREDENTIALS
        settings = PortalSettings(
            base_url=base_url,
            username=c["username"],
            password=c["password"],
            dstcode=c["dstcode"],
            madonvi=c["madonvi"],
        )
        return {self.name: settings}

    def environment(self, base_url: str) -> dict[str, str]:
        env = {f"GATEWAY_PORTAL_{k.upper()}": v for k, v in CREDENTIALS.items()}
        env["GATEWAY_PORTAL_BASE_URL"] = base_url
        return env
