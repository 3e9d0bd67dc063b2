"""How the composition root builds the tax adapter: it submits land dossiers' forms and follows them up."""

from __future__ import annotations

from typing import cast

from adapters.tax.client import TaxClient
from adapters.tax.handlers import ADAPTER_NAME, PaidThroughPlatform, TaxApi, TaxFollowUps, TaxHandlers
from adapters.tax.settings import TaxSettings
from contracts.tax import parse_tax_command
from gateway.delivery.flows import CommandFlow
from gateway.observe import ObservedClient
from gateway.plugins import AdapterParts, BuildContext, Plugin, Reaction, read_settings
from gateway.soap.signing import certificate_sha256


def build(context: BuildContext) -> AdapterParts:
    settings = read_settings(TaxSettings, context.settings, adapter=ADAPTER_NAME, env_prefix="GATEWAY_TAX_")
    client = TaxClient(settings)
    observed = cast(TaxApi, ObservedClient(
        client, partner=ADAPTER_NAME, metrics=context.metrics, operations=("submit", "notices", "voucher"),
    ))
    return AdapterParts(
        handlers=TaxHandlers(observed, schedule=settings, signer_sha256=certificate_sha256(settings.signing_cert_pem)),
        client=client,
        flow=CommandFlow(parse_tax_command),
        follow_ups=TaxFollowUps(observed, topic=context.events_topic, schedule=settings),
        probe=client.probe,
        # A land dossier's fees paid through the payment platform fulfil its obligation (contract: payment.confirmed
        # names the notice it paid in tax_notice_id).
        reactions=(Reaction("payment", PaidThroughPlatform()),),
    )


PLUGIN = Plugin(name=ADAPTER_NAME, reads="commands", build=build)
