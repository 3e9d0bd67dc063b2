"""Idempotency keys and body digests as gateway.adapter defines them (found missing by `make mutants`).

The key's exact form is a contract with the partners: a retry, redelivery or replay of a message that
failed retryably must send the very same key, or the partner may apply the effect twice; only a refused
dead letter's replay runs under a scope, and then the key must differ.
"""

from __future__ import annotations

import hashlib
from contextvars import copy_context

import pytest

from contracts.events import DossierEvent
from gateway.adapter import Delivered, Exchange, digest, idempotency_key, idempotency_scope
from gateway.loadgen.journeys import generate_journeys


@pytest.fixture(scope="module")
def event() -> DossierEvent:
    return generate_journeys(1, seed=11)[0].events[0]


def test_key_is_adapter_operation_and_event_id(event: DossierEvent) -> None:
    assert idempotency_key("national_portal", event, "DongBoHoSoMC") == f"national_portal:DongBoHoSoMC:{event.event_id}"


def test_key_is_the_same_on_every_call(event: DossierEvent) -> None:
    assert idempotency_key("a", event, "op") == idempotency_key("a", event, "op")


def test_a_scope_is_appended_and_only_inside_its_context(event: DossierEvent) -> None:
    def scoped() -> str:
        idempotency_scope.set("replay-0a1b2c")
        return idempotency_key("a", event, "op")

    # Run in a copied context, as the pipeline does per delivery, so the scope cannot leak out.
    assert copy_context().run(scoped) == f"a:op:{event.event_id}:replay-0a1b2c"
    assert idempotency_key("a", event, "op") == f"a:op:{event.event_id}"


def test_the_default_scope_is_empty() -> None:
    assert copy_context().run(idempotency_scope.get) == ""


def test_digest_is_the_sha256_hex_of_the_body() -> None:
    assert digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest(b"{}") == hashlib.sha256(b"{}").hexdigest()


def test_delivered_and_exchange_defaults() -> None:
    # No exchanges and no partner reference unless an adapter reports them: the ledger then records none.
    delivered = Delivered(partner_status=200, partner_answer=None)
    assert delivered.exchanges == ()
    assert Exchange("op", "k", "r", "s").partner_reference is None
