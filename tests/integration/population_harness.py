"""A population gateway for tests: the simulator over a synthetic population, settings, lookups, replies."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from adapters.population_db.settings import PopulationSettings
from adapters.population_db.simulator import PopulationSimulator
from adapters.population_db.synthetic import Citizen
from contracts.export import examples
from gateway.bootstrap import Gateway
from gateway.settings import GatewaySettings, ReplySettings
from tests.integration.command_gateway import command_gateway_settings, running_gateway

ACCESS_KEY = "test-access-log-key-0123456789abcdef"


def population_settings(sim: PopulationSimulator, **overrides: Any) -> PopulationSettings:
    values: dict[str, Any] = dict(
        base_url=sim.endpoint_url, username="gateway", secret=SecretStr("ndxp-secret"), service_code="1.004227",
        access_log_key=SecretStr(ACCESS_KEY), per_officer_limit="100000/minute", per_agency_limit="100000/minute",
        partner_quota="100000/second", timeout_s=5.0,
    )
    values.update(overrides)
    return PopulationSettings(**values)


def lookup(
    citizen: Citizen | None = None, *, dossier: str = "000.00.10.H34-240115-0012", reply_topic: str,
    officer: str = "CB-0042", agency: str = "000.00.10.H34", purpose: str = "identity_verification",
    wanted: Sequence[str] = (), event_id: uuid.UUID | None = None, **fields: Any,
) -> bytes:
    """A population.lookup from the published example, about `citizen` (their true data unless `fields` say)."""
    doc = examples("population_db")["population.lookup"]
    doc.update(event_id=str(event_id or uuid.uuid4()), correlation_id=str(uuid.uuid4()), dossier_code=dossier,
               officer_id=officer, agency_code=agency, purpose=purpose, wanted=list(wanted), reply_topic=reply_topic)
    if citizen is not None:
        doc.update(id_number=citizen.id_number, full_name=citizen.full_name.title(),
                   date_of_birth=citizen.birth.isoformat())
    doc.update(fields)
    return json.dumps(doc, ensure_ascii=False).encode()


@dataclass
class PopulationRun:
    sim: PopulationSimulator
    gw: Gateway | None
    lookups: str
    events: str
    replies_prefix: str
    settings: GatewaySettings


@asynccontextmanager
async def population_gateway(
    bootstrap: str, tmp_path: Path, *, size: int = 500, adapter: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None, database_url: str | None = None, **knobs: Any,
) -> AsyncIterator[PopulationRun]:
    """The simulator and an in-process gateway running the population adapter on private topics."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"onestop.replies.{suffix}."
    settings = command_gateway_settings(
        "population_db", bootstrap, tmp_path, suffix, database_url=database_url,
        replies=ReplySettings(topic_prefix=prefix, retention_ms=600_000), **(gateway or {}),
    )
    async with PopulationSimulator(size=size, **knobs) as sim:
        supplied = {"population_db": population_settings(sim, **(adapter or {}))}
        async with running_gateway(settings, supplied) as gw:
            yield PopulationRun(sim, gw, f"onestop.commands.population_db.{suffix}",
                                f"gateway.partner-events.population_db.{suffix}", prefix, settings)
