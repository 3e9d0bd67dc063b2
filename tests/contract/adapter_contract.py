"""What an adapter supplies to run the shared contract suite: its simulator, its knobs and its effects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.loadgen.journeys import Journey


class AdapterContract(Protocol):
    """The few fixtures each adapter provides; the suite does the rest."""

    name: str

    async def start_simulator(self, **knobs: Any) -> str:
        """Start a fresh simulator of the partner; return its base URL."""
        ...

    async def stop_simulator(self) -> None: ...

    def journeys(self, count: int, seed: int) -> list[Journey]:
        """Dossier journeys whose events this adapter acts on."""
        ...

    def undelivered(self, journeys: list[Journey]) -> list[str]:
        """Dossier codes whose effects are not (all) at the partner."""
        ...

    def duplicate_effects(self) -> int:
        """Second effects the partner saw (the simulator's own counter)."""
        ...

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        """Make the partner fail: retryable (outage) or permanent (business rejection)."""
        ...

    def heal(self) -> None: ...

    def in_flight(self) -> int:
        """Requests the partner is handling right now."""
        ...

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        """Settings objects by adapter name, for an in-process gateway."""
        ...

    def environment(self, base_url: str) -> dict[str, str]:
        """Environment variables configuring this adapter, for a `gateway run` process."""
        ...


@dataclass
class Running:
    """A started contract run: the partner's URL and private topic names."""

    base_url: str
    input_topic: str
    results_topic: str
    dlt_topic: str
