"""How the composition root builds the population database adapter: citizen lookups, request/reply."""

from __future__ import annotations

from typing import cast

from adapters.population_db.client import PopulationClient
from adapters.population_db.handlers import ADAPTER_NAME, PopulationApi, PopulationHandlers, failure_reply, redact
from adapters.population_db.policy import PurposePolicy, RateLimits
from adapters.population_db.settings import PopulationSettings
from contracts.population import parse_lookup
from gateway.delivery.flows import RequestReplyFlow
from gateway.observe import ObservedClient
from gateway.plugins import AdapterParts, BuildContext, ConfigurationError, Plugin, read_settings
from gateway.store.access_log import AccessLog


def build(context: BuildContext) -> AdapterParts:
    settings = read_settings(
        PopulationSettings, context.settings, adapter=ADAPTER_NAME, env_prefix="GATEWAY_POPULATION_DB_"
    )
    if context.store is None:
        raise ConfigurationError(f"{ADAPTER_NAME} adapter needs the gateway's store (its access log)")
    client = PopulationClient(settings, max_connections=context.in_flight)
    access_log = AccessLog(context.store.engine)
    observed = cast(PopulationApi, ObservedClient(
        client, partner=ADAPTER_NAME, metrics=context.metrics, operations=("verify", "lookup"),
    ))
    handlers = PopulationHandlers(
        observed,
        access_log=access_log,
        hash_key=settings.access_log_key.get_secret_value().encode(),
        policy=PurposePolicy(
            settings.purposes, refused=settings.refused_purposes, refuse_unlisted=settings.refuse_unlisted_purposes
        ),
        limits=RateLimits(per_officer=settings.per_officer_limit, per_agency=settings.per_agency_limit,
                          partner_quota=settings.partner_quota),
        service_code=settings.service_code,
        integration_code=settings.integration_code,
    )
    flow = RequestReplyFlow(parse_lookup, failure_reply=failure_reply, redact=redact, reply_prefix=context.reply_prefix)
    return AdapterParts(handlers=handlers, client=_ClientAndLog(client, access_log), flow=flow, probe=client.probe)


class _ClientAndLog:
    """The parts the root starts first and closes last: the SOAP client, and the access log's writer."""

    def __init__(self, client: PopulationClient, access_log: AccessLog) -> None:
        self._client = client
        self._log = access_log

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            await self._log.close()


PLUGIN = Plugin(name=ADAPTER_NAME, reads="commands", build=build)
