"""A payment gateway for tests: the platform simulator, private topics, the inbound listener on a free port."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.payment.handlers import ADAPTER_NAME
from adapters.payment.mapping import transaction_id
from adapters.payment.settings import PaymentSettings
from adapters.payment.simulator import PaymentSimulator
from contracts.export import examples
from gateway.bootstrap import Gateway
from gateway.settings import FollowUpSettings, GatewaySettings, InboundSettings
from tests.integration.command_gateway import command_gateway_settings, running_gateway

CLIENT_ID = "province-h34"
KEY_1 = "key-one-for-requests-0123456789"
KEY_2 = "key-two-for-callbacks-987654321"
FAST: dict[str, Any] = dict(inquiry_after_s=1.0, inquiry_interval_s=0.5, expire_after_s=30.0)


@dataclass
class PaymentRun:
    sim: PaymentSimulator
    gw: Gateway | None
    commands: str
    events: str
    settings: GatewaySettings

    @property
    def callback_url(self) -> str:
        assert self.gw is not None and self.gw.inbound is not None
        return self.gw.inbound.url + "/callbacks/payment/v1"


def command(code: str, *, fee_request: str = "FR-1", event_id: uuid.UUID | None = None,
            amounts: tuple[int, ...] = (100_000, 500_000), tax_notice_id: str | None = None) -> bytes:
    doc = examples("payment")["payment.collect_fees"]
    doc.update(event_id=str(event_id or uuid.uuid4()), dossier_code=code, fee_request_id=fee_request)
    doc["fees"] = [dict(doc["fees"][i % 2], code=f"F{i}", amount=a) for i, a in enumerate(amounts)]
    if tax_notice_id is not None:
        doc["tax_notice_id"] = tax_notice_id
    return json.dumps(doc, ensure_ascii=False).encode()


def txn(code: str, fee_request: str = "FR-1") -> str:
    return transaction_id(code, fee_request)


def payment_settings(sim: PaymentSimulator, **overrides: Any) -> PaymentSettings:
    return PaymentSettings(base_url=sim.base_url, client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2,  # type: ignore[arg-type]
                           return_url="https://dichvucong.example.vn/done", bank_bin="970415",
                           account="113366668888", **{**FAST, **overrides})


def gateway_settings(bootstrap: str, directory: Path, suffix: str, database_url: str | None = None,
                     **inbound: Any) -> GatewaySettings:
    followups = FollowUpSettings(scan_interval_s=0.1, claim_s=5.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    return command_gateway_settings(ADAPTER_NAME, bootstrap, directory, suffix, database_url=database_url,
                                    followups=followups, inbound=InboundSettings(port=0, **inbound))


@asynccontextmanager
async def payment_gateway(bootstrap: str, tmp_path: Path, *, schedule: dict[str, Any] | None = None,
                          inbound: dict[str, Any] | None = None, **knobs: Any) -> AsyncIterator[PaymentRun]:
    suffix = uuid.uuid4().hex[:8]
    settings = gateway_settings(bootstrap, tmp_path, suffix, **(inbound or {}))
    commands, events = f"onestop.commands.payment.{suffix}", f"gateway.partner-events.payment.{suffix}"
    async with PaymentSimulator(client_id=CLIENT_ID, key_1=KEY_1, key_2=KEY_2, seed=7, **knobs) as sim:
        supplied = {ADAPTER_NAME: payment_settings(sim, **(schedule or {}))}
        async with running_gateway(settings, supplied) as gw:
            run = PaymentRun(sim, gw, commands, events, settings)
            sim.set_knobs(callback_url=run.callback_url)
            yield run


def of_type(messages: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """Messages of one type, de-duplicated on event_id."""
    return list({m["event_id"]: m for m in messages if m["event_type"] == event_type}.values())


def outcomes(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """transaction id -> the outcome event types published for it, de-duplicated on event_id."""
    out: dict[str, list[str]] = {}
    for kind in ("payment.confirmed", "payment.failed", "payment.expired"):
        for m in of_type(messages, kind):
            out.setdefault(m["transaction_id"], []).append(kind)
    return out
