"""A tax gateway for tests: the tax simulator, keys, private topics, and commands built from the published example."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.tax.simulator import TaxSimulator
from contracts.export import examples
from gateway.bootstrap import Gateway
from gateway.settings import FollowUpSettings, GatewaySettings
from tests.integration.command_gateway import command_gateway_settings, running_gateway
from tests.integration.test_tax_client import tax_settings
from tests.tax_keys import land_office

# The tax office's rhythm, shrunk from minutes and days to fractions of a second.
FAST: dict[str, Any] = dict(first_poll_after_s=0.2, poll_interval_s=0.3, poll_backoff_factor=1.0,
                            poll_interval_max_s=0.3, notice_deadline_s=30.0, payment_deadline_s=30.0)


@dataclass
class TaxRun:
    """A started tax gateway: its simulator, topics and settings."""

    sim: TaxSimulator
    gw: Gateway | None
    commands: str
    events: str
    settings: GatewaySettings


def command(code: str, *, sequence: int = 1, event_id: uuid.UUID | None = None) -> bytes:
    """A `tax.determine_obligations` for dossier `code`, from the published example."""
    doc = examples("tax")["tax.determine_obligations"]
    doc.update(event_id=str(event_id or uuid.uuid4()), dossier_code=code, sequence=sequence)
    return json.dumps(doc, ensure_ascii=False).encode()


def gateway_settings(bootstrap: str, directory: Path, suffix: str, database_url: str | None = None) -> GatewaySettings:
    followups = FollowUpSettings(scan_interval_s=0.1, claim_s=5.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    return command_gateway_settings("tax", bootstrap, directory, suffix, database_url=database_url, followups=followups)


@asynccontextmanager
async def tax_gateway(
    bootstrap: str, tmp_path: Path, *, schedule: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[TaxRun]:
    """The tax simulator and an in-process gateway running the tax adapter with a fast schedule."""
    suffix = uuid.uuid4().hex[:8]
    settings = gateway_settings(bootstrap, tmp_path, suffix)
    commands, events = f"onestop.commands.tax.{suffix}", f"gateway.partner-events.tax.{suffix}"
    async with TaxSimulator(land_office_cert=land_office().cert_pem, **knobs) as sim:
        supplied = {"tax": tax_settings(sim, tmp_path, **{**FAST, **(schedule or {})})}
        async with running_gateway(settings, supplied) as gw:
            yield TaxRun(sim, gw, commands, events, settings)


def of_type(messages: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """Messages of one type, de-duplicated on event_id."""
    return list({m["event_id"]: m for m in messages if m["event_type"] == event_type}.values())
