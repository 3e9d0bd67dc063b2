"""How the composition root builds the payment adapter: fee requests, the platform's callbacks, inquiries."""

from __future__ import annotations

from typing import cast

from adapters.payment.client import PaymentClient
from adapters.payment.handlers import (
    ADAPTER_NAME,
    PaymentApi,
    PaymentCallbacks,
    PaymentFollowUps,
    PaymentHandlers,
)
from adapters.payment.settings import PaymentSettings
from contracts.payment import parse_payment_command
from gateway.delivery.flows import CommandFlow
from gateway.inbound.model import CallbackRoute
from gateway.observe import ObservedClient
from gateway.plugins import AdapterParts, BuildContext, Plugin, read_settings


def build(context: BuildContext) -> AdapterParts:
    settings = read_settings(PaymentSettings, context.settings, adapter=ADAPTER_NAME, env_prefix="GATEWAY_PAYMENT_")
    client = PaymentClient(settings)
    observed = cast(PaymentApi, ObservedClient(client, partner=ADAPTER_NAME, metrics=context.metrics,
                                               operations=("create", "inquiry")))
    callbacks = PaymentCallbacks(context.store, topic=context.events_topic, config=settings)
    return AdapterParts(
        handlers=PaymentHandlers(observed, config=settings),
        client=client,
        flow=CommandFlow(parse_payment_command),
        probe=client.probe,
        follow_ups=PaymentFollowUps(observed, context.store, topic=context.events_topic, config=settings),
        callbacks=(CallbackRoute(settings.callback_path, ADAPTER_NAME, callbacks,
                                 max_body_bytes=settings.callback_max_bytes),),
    )


PLUGIN = Plugin(name=ADAPTER_NAME, reads="commands", build=build)
