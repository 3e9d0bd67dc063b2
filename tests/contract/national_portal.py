"""The national-portal adapter's fixtures for the shared contract suite."""

from __future__ import annotations

from typing import Any

from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import PortalSimulator
from gateway.demo import count_lost
from gateway.loadgen.journeys import Journey, generate_journeys

CREDENTIALS = {"username": "gateway", "password": "secret", "dstcode": "H34", "madonvi": "000.00.00.H55"}


class NationalPortalContract:
    name = "national_portal"

    def __init__(self) -> None:
        self.sim: PortalSimulator | None = None

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = PortalSimulator(**knobs)
        return await self.sim.start()

    async def stop_simulator(self) -> None:
        if self.sim is not None:
            await self.sim.stop()

    def journeys(self, count: int, seed: int) -> list[Journey]:
        return generate_journeys(count, seed=seed)

    def undelivered(self, journeys: list[Journey]) -> list[str]:
        assert self.sim is not None
        return count_lost(journeys, self.sim.dossiers)

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
        return {self.name: PortalSettings(base_url=base_url, **CREDENTIALS)}

    def environment(self, base_url: str) -> dict[str, str]:
        env = {f"GATEWAY_PORTAL_{k.upper()}": v for k, v in CREDENTIALS.items()}
        env["GATEWAY_PORTAL_BASE_URL"] = base_url
        return env
