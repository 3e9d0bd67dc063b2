"""How the composition root builds the national-portal adapter: it syncs every lifecycle event to the portal."""

from __future__ import annotations

from typing import cast

from adapters.national_portal.client import PortalClient
from adapters.national_portal.handlers import ADAPTER_NAME, FactReaction, PortalApi, PortalHandlers
from adapters.national_portal.settings import PortalSettings
from gateway.observe import ObservedClient
from gateway.plugins import AdapterParts, BuildContext, Plugin, Reaction, read_settings


def build(context: BuildContext) -> AdapterParts:
    settings = read_settings(PortalSettings, context.settings, adapter=ADAPTER_NAME, env_prefix="GATEWAY_PORTAL_")
    if "max_connections" not in settings.model_fields_set:
        # One pooled connection per message that may be in flight: no queueing inside the HTTP client.
        settings = settings.model_copy(update={"max_connections": context.in_flight})
    portal = PortalClient(settings)
    observed = ObservedClient(
        portal, partner=ADAPTER_NAME, metrics=context.metrics,
        operations=("sync_snapshot", "update_progress", "update_progress_steps", "sync_rating", "lookup"),
    )
    store = context.store
    handlers = PortalHandlers(
        cast(PortalApi, observed),
        facts=None if store is None else store.facts,
        index=None if store is None else store.service_index,
        already_exists_codes=settings.already_exists_codes,
        not_found_codes=settings.not_found_codes,
    )
    reactions: tuple[Reaction, ...] = ()
    if store is not None:
        reactions = tuple(
            Reaction(partner, FactReaction(
                partner, store.facts, population_code=settings.population_database_code,
                payments_as=settings.confirmed_payments_as,
            ))
            for partner in settings.react_to
        )
    return AdapterParts(handlers=handlers, client=portal, reactions=reactions, probe=portal.probe)


PLUGIN = Plugin(name=ADAPTER_NAME, reads="lifecycle", build=build)
