"""How the composition root builds the postal adapter: it carries out postal commands and polls the tracking feed."""

from __future__ import annotations

from typing import cast

from adapters.postal.client import PostalClient
from adapters.postal.handlers import ADAPTER_NAME, PostalApi, PostalHandlers, TrackingFeed
from adapters.postal.settings import PostalSettings
from contracts.postal import EVENT_TYPES, parse_postal_command
from gateway.delivery.flows import CommandFlow
from gateway.observe import ObservedClient
from gateway.plugins import AdapterParts, BuildContext, ConfigurationError, Plugin, read_settings


def build(context: BuildContext) -> AdapterParts:
    settings = read_settings(PostalSettings, context.settings, adapter=ADAPTER_NAME, env_prefix="GATEWAY_POSTAL_")
    unknown = sorted(set(settings.status_events.values()) - set(EVENT_TYPES))
    if unknown:
        raise ConfigurationError(
            f"postal adapter: GATEWAY_POSTAL_STATUS_EVENTS maps codes to {', '.join(unknown)}, which the postal "
            f"contract does not have; use one of {', '.join(EVENT_TYPES)}"
        )
    client = PostalClient(settings)
    observed = cast(PostalApi, ObservedClient(
        client, partner=ADAPTER_NAME, metrics=context.metrics,
        operations=("create_order", "cancel_order", "tracking_page"),
    ))
    return AdapterParts(
        handlers=PostalHandlers(observed, customer_code=settings.customer_code),
        client=client,
        flow=CommandFlow(parse_postal_command),
        feeds=(TrackingFeed(observed, topic=context.events_topic, status_events=settings.status_events),),
        probe=client.probe,
    )


PLUGIN = Plugin(name=ADAPTER_NAME, reads="commands", build=build)
