"""aiohttp client of the payment platform: create a transaction, ask after one. Classifies every failure.

It sends bodies the mapping built (already signed) and returns the platform's JSON objects with the hashes of
both sides for the ledger; it knows nothing of Kafka or the contracts. The platform's text leaves scrubbed of
the personal values sent (the payer's name and ID number) and of our keys.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.payment import mapping
from adapters.payment.settings import PaymentSettings
from gateway.adapter import digest
from gateway.errors import GatewayError, PartnerRejected
from gateway.http_client import (
    PooledClient,
    bounded,
    collapse,
    json_object,
    pooled_session,
    raise_for_transient,
    scrubbed_error,
    transport_failures,
)
from gateway.logging import scrub_text

OK = "0"  # the platform's "error": "0"


@dataclass(frozen=True, slots=True)
class Sent:
    """The platform's answer (a JSON object) and the hashes of what went each way."""

    answer: dict[str, Any]
    request_sha256: str
    response_sha256: str


PROBE_TRANSACTION = "GWPROBE0000000000000"  # 20 characters; no fee request's id (they start with the dossier code)


class PaymentClient(PooledClient):
    """The platform's create-transaction and inquiry endpoints over one pooled session."""

    def __init__(self, settings: PaymentSettings) -> None:
        self._settings = settings

    def _open(self) -> aiohttp.ClientSession:
        s = self._settings
        return pooled_session(s.max_connections, aiohttp.ClientTimeout(total=s.timeout_s),
                              headers={"Accept": "application/json"})

    async def create(self, body: Mapping[str, Any], *, known: Collection[str] = ()) -> Sent:
        """Create (or find again: the platform is idempotent per transaction_id) one transaction."""
        return await self._exchange("create", self._settings.create_url, body, known)

    async def inquiry(self, body: Mapping[str, Any]) -> Sent:
        """The platform's view of one transaction (signed with key 2; the handlers verify it)."""
        return await self._exchange("inquiry", self._settings.inquiry_url, body, ())

    async def probe(self) -> str:
        """`gateway check`: a signed inquiry for a transaction id no fee request yields (ours start with the dossier
        code). Any answer of the platform's — "no such transaction" included — proves the network, the endpoint and
        the client's signature key; an unreachable or failing platform raises PartnerUnavailable."""
        s = self._settings
        body = mapping.inquiry_request(PROBE_TRANSACTION, client_id=s.client_id, key=s.key_1.get_secret_value())
        try:
            await self.inquiry(body)
        except PartnerRejected as exc:
            return f"inquiry answered; a probe transaction refused as expected ({exc.reason})"
        return "inquiry answered for a probe transaction"

    async def _exchange(self, op: str, url: str, body: Mapping[str, Any], known: Collection[str]) -> Sent:
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            with transport_failures(self._settings.timeout_s, op=op):
                async with self._session().post(url, data=encoded,
                                                headers={"Content-Type": "application/json"}) as response:
                    raw = await response.read()
                    raise_for_transient(response.status, response.headers.get("Retry-After"), op=op)
                    answer = json_object(response.status, raw, op=op)
            error = str(answer.get("error", OK))
            if error != OK:
                message = collapse(str(answer.get("message", "")))
                raise PartnerRejected(f"{op}: the platform answered error {error}: {message}", partner_code=error)
        except GatewayError as exc:
            raise scrubbed_error(exc, lambda text: self._scrub(text, known)) from None
        return Sent(answer, digest(encoded), digest(raw))

    def _scrub(self, text: str, known: Collection[str]) -> str:
        secrets = (self._settings.key_1.get_secret_value(), self._settings.key_2.get_secret_value())
        return bounded(scrub_text(text, (*known, *secrets)))
