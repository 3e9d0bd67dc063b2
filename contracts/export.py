"""Exports the public contracts: JSON Schema per message and an AsyncAPI document for the topics."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contracts import topics
from contracts.events import DOSSIER_EVENT_ADAPTER, EVENT_TYPES
from contracts.payment import COMMAND_TYPES as PAYMENT_COMMAND_TYPES
from contracts.payment import PAYMENT_COMMAND_ADAPTER, PaymentTopicMessage
from contracts.payment import TOPIC_TYPES as PAYMENT_TOPIC_TYPES
from contracts.population import COMMAND_TYPES as POPULATION_COMMAND_TYPES
from contracts.population import LOOKUP_ADAPTER, REPLY_ADAPTER, PopulationTopicMessage
from contracts.population import TOPIC_TYPES as POPULATION_TOPIC_TYPES
from contracts.postal import COMMAND_TYPES as POSTAL_COMMAND_TYPES
from contracts.postal import EVENT_TYPES as POSTAL_EVENT_TYPES
from contracts.postal import POSTAL_COMMAND_ADAPTER, PostalTopicMessage
from contracts.results import (
    RESULT_MESSAGE_ADAPTER,
    RESULT_TYPES,
    InputInvalid,
    InputSource,
    KeyText,
    SyncResult,
    input_invalid_id,
)
from contracts.tax import COMMAND_TYPES as TAX_COMMAND_TYPES
from contracts.tax import TAX_COMMAND_ADAPTER, TaxTopicMessage
from contracts.tax import TOPIC_TYPES as TAX_TOPIC_TYPES
from contracts.validators import DOSSIER_CODE_PATTERN, NOT_EXPRESSIBLE

SCHEMA_DIR = Path(__file__).parent / "schemas"
EXAMPLE_DIR = Path(__file__).parent / "examples"


EVENT_DESCRIPTION = (
    "A dossier lifecycle event published by the one-stop system (topic " + topics.DOSSIER_EVENTS + "), one of "
    "the event types below, told apart by the required event_type. JSON Schema draft 2020-12, using only "
    "keywords that read the same in draft-07, so it is also an AsyncAPI schema. Integers may be written 100 or "
    "100.0 (the same JSON number), never \"100\". Every format (date-time, uuid) is also spelled as a pattern. "
    "Patterns are ECMA-262: $ is the very end of the string (Python's re also matches it before a final "
    "newline). The gateway accepts exactly what this schema accepts, except for these rules JSON Schema cannot "
    "express: "
    + "; ".join(f"({i}) {rule}, e.g. refused: {example}" for i, (rule, example) in
                enumerate(NOT_EXPRESSIBLE.values(), start=1))
    + ". docs/partners.md explains each one; `gateway contracts validate FILE...` checks messages with the "
    "gateway's own decoder."
)


RESULTS_DESCRIPTION = (
    "Every message the gateway publishes on " + topics.SYNC_RESULTS + " as of contract 1.1, told apart by the "
    "required event_type: gateway.sync_result (the outcome of one dossier event at one partner; unchanged since "
    "1.0, also published alone as sync-result.v1.json) or gateway.input_invalid (new in 1.1: the answer to an "
    "input record that is not a dossier event, also published alone as sync-result-input-invalid.v1.1.json). "
    "A minor version: schema_version stays 1 and every sync_result is what 1.0 promised; readers that took every "
    "message for a sync_result must now look at event_type first and skip types they do not know. docs/partners.md "
    "explains both messages."
)
INPUT_INVALID_DESCRIPTION = (
    "Contract 1.1. The answer to a record on " + topics.DOSSIER_EVENTS + " that is not a dossier event (not "
    "JSON, not UTF-8, refused by the schema or a rule, over the size limit): the reason (field names and rules, "
    "never values), the record's topic, partition, offset and key, and never its value. The record is also "
    "dead-lettered (its dead letter carries the same topic, partition and offset). Published on "
    + topics.SYNC_RESULTS + " beside the sync results; event_id is derived from (partner, topic, partition, "
    "offset), so a redelivered record is answered under the same id."
)


POSTAL_COMMANDS_DESCRIPTION = (
    "A command of the one-stop system to the postal service (topic " + topics.commands_topic("postal") + ", keyed "
    "by dossier code), one of the command types below, told apart by the required event_type (contract 1.2). "
    "Personal data (names, addresses, phones) travels only on the postal topics. Each command is answered by one "
    "gateway.command_result on " + topics.partner_events_topic("postal") + "; a record that is not a postal "
    "command is answered by gateway.input_invalid there and dead-lettered. docs/partners.md (Postal) explains them."
)
POSTAL_EVENTS_DESCRIPTION = (
    "Every message the gateway publishes on " + topics.partner_events_topic("postal") + " (contract 1.2), told "
    "apart by the required event_type: a postal event (what the postal service reported, from a command's answer "
    "or from its tracking feed; its event_id is derived from the facts, so a repeat is de-duplicated on it), "
    "gateway.command_result (the answer to one postal command) or gateway.input_invalid (the answer to a record "
    "on the commands topic that is not a postal command). Readers skip event types they do not know."
)

TAX_COMMANDS_DESCRIPTION = (
    "A command of the one-stop system to the tax office (topic " + topics.commands_topic("tax") + ", keyed by "
    "dossier code; contract 1.3): tax.determine_obligations, the cadastral transfer form of a land dossier, which "
    "the gateway signs and submits to the tax office once (contracts/tax/tax-interconnect.v1.wsdl), then follows "
    "up until the notice is paid or a deadline passes. Personal data (names, ID numbers, tax codes, addresses) "
    "travels only on the tax topics. Each command is answered by one gateway.command_result on "
    + topics.partner_events_topic("tax") + "; a record that is not a tax command is answered by "
    "gateway.input_invalid there and dead-lettered. docs/partners.md (Tax office) explains them."
)
TAX_EVENTS_DESCRIPTION = (
    "Every message the gateway publishes on " + topics.partner_events_topic("tax") + " (contract 1.3), told apart "
    "by the required event_type: a tax event (tax.submitted, tax.notice_issued, tax.obligation_fulfilled, "
    "tax.no_notice_by_deadline, tax.no_payment_by_deadline, tax.follow_up_failed; its event_id is derived from "
    "the dossier, the type and the facts each type names, so a repeat is de-duplicated on it), "
    "gateway.command_result (the answer to one tax command: done with the receipt id, or rejected) or "
    "gateway.input_invalid (the answer to a record on the commands topic that is not a tax command). Readers skip "
    "event types they do not know. Rule the schema cannot express: a notice's total is the sum of its items."
)

PAYMENT_COMMANDS_DESCRIPTION = (
    "A command of the one-stop system to the payment platform (topic " + topics.commands_topic("payment") + ", "
    "keyed by dossier code; contract 1.6): payment.collect_fees, the fee lines of one fee request of a dossier. The "
    "gateway creates one transaction per (dossier, fee_request_id) at the platform. The payer's name and ID number "
    "(which the platform's bill needs) travel only on this topic. Each command is answered by one "
    "gateway.command_result on " + topics.partner_events_topic("payment") + "; a record that is not a payment "
    "command is answered by gateway.input_invalid there and dead-lettered. docs/partners.md (Payment) explains them."
)
PAYMENT_EVENTS_DESCRIPTION = (
    "Every message the gateway publishes on " + topics.partner_events_topic("payment") + " (contract 1.6), told "
    "apart by the required event_type: payment.requested (payment URL and VietQR payload), then exactly one of "
    "payment.confirmed (with the e-receipt), payment.failed or payment.expired per transaction (their event_id is "
    "derived from the transaction alone: one outcome per transaction, whether learnt from the platform's signed "
    "callback or its inquiry), payment.reconciled (a day's statement compared with the gateway's record, keyed "
    "reconciliation:<date>), gateway.command_result or gateway.input_invalid. Readers skip event types they do "
    "not know. No message here carries the payer's name or ID number."
)


POPULATION_COMMANDS_DESCRIPTION = (
    "A citizen lookup of the one-stop system for the population database (topic "
    + topics.commands_topic("population_db") + ", keyed by dossier code; contract 1.5): who asks (officer, agency), "
    "why (purpose), the ID number, name and date of birth, and where the answer goes (reply_topic, which must start "
    "with the gateway's reply prefix, default onestop.replies., and correlation_id). Personal data travels only on "
    "this topic and on the reply topic. Each request is answered once, on its reply topic (population.lookup_reply); "
    "a record that is not a lookup is answered by gateway.input_invalid on "
    + topics.partner_events_topic("population_db") + "."
)
POPULATION_REPLY_DESCRIPTION = (
    "The answer to one population.lookup, on the request's reply topic only (contract 1.5), keyed by dossier code: "
    "match, mismatch (mismatched_fields), not_found, refused (purpose policy or rate limit), invalid (the request's "
    "ID number, name or date of birth cannot be right; the database was not asked) or failure; citizen carries only "
    "the fields the purpose allows. Reply topics are created with a short retention (replies.retention_ms)."
)
POPULATION_EVENTS_DESCRIPTION = (
    "Every message the gateway publishes on " + topics.partner_events_topic("population_db") + " (contract 1.5): "
    "population.consulted (that a dossier consulted the population database: purpose, outcome, agency; never an ID "
    "number, name or date of birth; one per answered lookup, id derived from the request) or gateway.input_invalid "
    "(the answer to a record on the lookup topic that is not a lookup). Readers skip event types they do not know."
)


def _union(
    adapter: TypeAdapter[Any], name: str, title: str, types: tuple[str, ...], description: str
) -> dict[str, Any]:
    """The JSON Schema of a discriminated union of messages, told apart by their required event_type."""
    union = adapter.json_schema(mode="validation")
    union.pop("discriminator", None)  # OpenAPI's keyword, not JSON Schema; each branch's const says the same
    return _with_header(
        {"title": title, "type": "object", "required": ["event_type"],
         "properties": {"event_type": {"enum": list(types)}}, **union},
        name, description,
    )


def _with_header(schema: dict[str, Any], name: str, description: str | None = None) -> dict[str, Any]:
    schema["$id"] = name
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    if description is not None:
        schema["description"] = description
    return schema


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema for every published message."""
    event = DOSSIER_EVENT_ADAPTER.json_schema(mode="validation")
    # pydantic adds OpenAPI's `discriminator` object: not JSON Schema (a strict validator refuses the unknown
    # keyword) and a string in AsyncAPI schemas. The `const` event_type of each branch says the same.
    event.pop("discriminator", None)
    event = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "dossier-event.v1.json",
        "title": "DossierEvent",
        "description": EVENT_DESCRIPTION,
        "type": "object",
        "required": ["event_type"],
        "properties": {"event_type": {"enum": list(EVENT_TYPES)}},
        **event,
    }
    result = _with_header(TypeAdapter(SyncResult).json_schema(mode="validation"), "sync-result.v1.json")
    invalid = _with_header(
        TypeAdapter(InputInvalid).json_schema(mode="validation"), "sync-result-input-invalid.v1.1.json",
        INPUT_INVALID_DESCRIPTION,
    )
    union = RESULT_MESSAGE_ADAPTER.json_schema(mode="validation")
    union.pop("discriminator", None)  # as above: the const event_type of each branch says the same
    union = _with_header(
        {
            "title": "SyncResultsMessage",
            "type": "object",
            "required": ["event_type"],
            "properties": {"event_type": {"enum": list(RESULT_TYPES)}},
            **union,
        },
        "sync-result.v1.1.json",
        RESULTS_DESCRIPTION,
    )
    postal_events = _union(
        TypeAdapter(PostalTopicMessage), "postal-event.v1.json", "PostalTopicMessage",
        (*POSTAL_EVENT_TYPES, "gateway.command_result", "gateway.input_invalid"), POSTAL_EVENTS_DESCRIPTION,
    )
    tax_events = _union(
        TypeAdapter(TaxTopicMessage), "tax-event.v1.json", "TaxTopicMessage", TAX_TOPIC_TYPES,
        TAX_EVENTS_DESCRIPTION,
    )
    payment_events = _union(
        TypeAdapter(PaymentTopicMessage), "payment-event.v1.json", "PaymentTopicMessage", PAYMENT_TOPIC_TYPES,
        PAYMENT_EVENTS_DESCRIPTION,
    )
    return {
        "payment-command.v1.json": _union(
            PAYMENT_COMMAND_ADAPTER, "payment-command.v1.json", "PaymentCommand", PAYMENT_COMMAND_TYPES,
            PAYMENT_COMMANDS_DESCRIPTION,
        ),
        "payment-event.v1.json": payment_events,
        "postal-command.v1.json": _union(
            POSTAL_COMMAND_ADAPTER, "postal-command.v1.json", "PostalCommand", POSTAL_COMMAND_TYPES,
            POSTAL_COMMANDS_DESCRIPTION,
        ),
        "postal-event.v1.json": postal_events,
        "tax-command.v1.json": _union(
            TAX_COMMAND_ADAPTER, "tax-command.v1.json", "TaxCommand", TAX_COMMAND_TYPES, TAX_COMMANDS_DESCRIPTION
        ),
        "tax-event.v1.json": tax_events,
        "population-lookup.v1.json": _union(
            LOOKUP_ADAPTER, "population-lookup.v1.json", "PopulationLookup", POPULATION_COMMAND_TYPES,
            POPULATION_COMMANDS_DESCRIPTION,
        ),
        "population-reply.v1.json": _with_header(
            REPLY_ADAPTER.json_schema(mode="validation"), "population-reply.v1.json", POPULATION_REPLY_DESCRIPTION
        ),
        "population-event.v1.json": _union(
            TypeAdapter(PopulationTopicMessage), "population-event.v1.json", "PopulationTopicMessage",
            POPULATION_TOPIC_TYPES, POPULATION_EVENTS_DESCRIPTION,
        ),
        "dossier-event.v1.json": event,
        "sync-result.v1.json": result,
        "sync-result.v1.1.json": union,
        "sync-result-input-invalid.v1.1.json": invalid,
    }


def examples(partner: str | None = None) -> dict[str, dict[str, Any]]:
    """Event type → the valid example message in contracts/examples/<event type>.json (hand-written), or with a
    partner, its commands in contracts/examples/<partner>/."""
    folder = EXAMPLE_DIR / partner if partner else EXAMPLE_DIR
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}


def input_invalid_example() -> dict[str, Any]:
    """A gateway.input_invalid message as the gateway writes it (for the AsyncAPI document)."""
    source = InputSource(
        topic=topics.DOSSIER_EVENTS, partition=3, offset=1042,
        key=KeyText(encoding="utf-8", data="000.00.01.H34-191215-0007"),
    )
    event_id = input_invalid_id("national_portal", source.topic, source.partition, source.offset)
    message = InputInvalid(
        event_id=event_id, occurred_at=datetime(2019, 12, 15, 8, 30, 2, tzinfo=timezone(timedelta(hours=7))),
        dossier_code="000.00.01.H34-191215-0007",
        correlation_id=event_id, schema_version=1, partner="national_portal", outcome="invalid",
        reason="dossier.received.occurred_at: Value error, must be an RFC 3339 date-time with an offset, e.g. "
        "2019-12-15T08:30:00+07:00 (year 1000-9998)",
        source=source,
    )
    doc: dict[str, Any] = json.loads(message.model_dump_json())
    return doc


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0 document describing the topics and their messages."""
    key = {"type": "string", "description": "dossier code", "pattern": DOSSIER_CODE_PATTERN}
    invalid_key = {
        "type": "string",
        "description": "the dossier code, when the invalid record's key was one; otherwise the message has no key",
        "pattern": DOSSIER_CODE_PATTERN,
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Provincial one-stop integration gateway",
            "version": "1.6.0",
            "description": "Kafka topics between the one-stop system and the partner gateway. "
            "Messages are JSON (UTF-8), keyed by dossier code; order holds per dossier. 1.1 adds InputInvalid: "
            "every input record that is not a dossier event is answered on the results topic too "
            "(schemas/sync-result.v1.1.json is the schema of every message there). 1.2 adds commands to one "
            "partner and what that partner reports back, on topics of that partner only (the postal service first). "
            "1.3 adds the tax office: the command tax.determine_obligations (a land dossier's cadastral transfer "
            "form) and the tax events (submitted, notice issued, obligation fulfilled, and the follow-up's "
            "deadlines and failures); the SOAP side is contracts/tax/tax-interconnect.v1.wsdl. "
            "1.4 (minor: every new field optional, 1.0-1.3 dossier events stay valid) lets the dossier snapshot carry "
            "what the national service index scores: submission date and place, refusal date, the applicant's "
            "identity and VNeID authentication, online payment, national databases consulted, per submitted "
            "document its download link and digitisation marks, per fee its kind and collection form. "
            "1.5 adds the population database: citizen lookups (request/reply: each answered once on the reply "
            "topic the request names) and population.consulted; the SOAP side is "
            "contracts/population/population.v1.wsdl. "
            "1.6 adds the payment platform: the command payment.collect_fees and the payment events (requested, "
            "confirmed, failed, expired, reconciled); the platform's callbacks to the gateway are HTTP "
            "(contracts/openapi/payment-callbacks.v1.json).",
        },
        "defaultContentType": "application/json",
        "channels": {
            "dossierEvents": {
                "address": topics.DOSSIER_EVENTS,
                "messages": {"dossierEvent": {"$ref": "#/components/messages/DossierEvent"}},
            },
            "postalCommands": {
                "address": topics.commands_topic("postal"),
                "messages": {"postalCommand": {"$ref": "#/components/messages/PostalCommand"}},
            },
            "postalEvents": {
                "address": topics.partner_events_topic("postal"),
                "messages": {"postalMessage": {"$ref": "#/components/messages/PostalMessage"}},
            },
            "taxCommands": {
                "address": topics.commands_topic("tax"),
                "messages": {"taxCommand": {"$ref": "#/components/messages/TaxCommand"}},
            },
            "taxEvents": {
                "address": topics.partner_events_topic("tax"),
                "messages": {"taxMessage": {"$ref": "#/components/messages/TaxMessage"}},
            },
            "populationLookups": {
                "address": topics.commands_topic("population_db"),
                "messages": {"populationLookup": {"$ref": "#/components/messages/PopulationLookup"}},
            },
            "populationReplies": {
                "address": "{reply_topic}",
                "parameters": {"reply_topic": {
                    "description": "The request's reply_topic (it must start with the gateway's reply prefix, "
                    "default onestop.replies.)",
                }},
                "messages": {"populationReply": {"$ref": "#/components/messages/PopulationReply"}},
            },
            "populationEvents": {
                "address": topics.partner_events_topic("population_db"),
                "messages": {"populationMessage": {"$ref": "#/components/messages/PopulationMessage"}},
            },
            "paymentCommands": {
                "address": topics.commands_topic("payment"),
                "messages": {"paymentCommand": {"$ref": "#/components/messages/PaymentCommand"}},
            },
            "paymentEvents": {
                "address": topics.partner_events_topic("payment"),
                "messages": {"paymentMessage": {"$ref": "#/components/messages/PaymentMessage"}},
            },
            "syncResults": {
                "address": topics.SYNC_RESULTS,
                "messages": {
                    "syncResult": {"$ref": "#/components/messages/SyncResult"},
                    "inputInvalid": {"$ref": "#/components/messages/InputInvalid"},
                },
            },
        },
        "operations": {
            "consumePostalCommands": {
                "action": "receive",
                "channel": {"$ref": "#/channels/postalCommands"},
                "summary": "The gateway consumes the one-stop system's postal commands (pickups, result deliveries, "
                "cancellations).",
            },
            "publishPostalEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/postalEvents"},
                "summary": "The gateway answers each postal command and reports what the postal service says about "
                "each order (from its answers and its tracking feed).",
            },
            "consumeTaxCommands": {
                "action": "receive",
                "channel": {"$ref": "#/channels/taxCommands"},
                "summary": "The gateway consumes the one-stop system's tax commands (determine the financial "
                "obligations of a land dossier).",
            },
            "publishTaxEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/taxEvents"},
                "summary": "The gateway answers each tax command and reports what the tax office says about each "
                "dossier (receipt, notices, payment) and when its follow-up gives up.",
            },
            "consumePopulationLookups": {
                "action": "receive",
                "channel": {"$ref": "#/channels/populationLookups"},
                "summary": "The gateway consumes citizen lookups for the population database.",
            },
            "replyPopulationLookups": {
                "action": "send",
                "channel": {"$ref": "#/channels/populationReplies"},
                "summary": "The gateway answers each lookup once, on the reply topic the request names.",
            },
            "publishPopulationEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/populationEvents"},
                "summary": "The gateway reports that a dossier consulted the population database (no personal "
                "data), and answers records on the lookup topic that are not lookups.",
            },
            "consumePaymentCommands": {
                "action": "receive",
                "channel": {"$ref": "#/channels/paymentCommands"},
                "summary": "The gateway consumes the one-stop system's fee requests (collect these fees for a "
                "dossier).",
            },
            "publishPaymentEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/paymentEvents"},
                "summary": "The gateway answers each fee request and reports each transaction's request and its one "
                "outcome (confirmed, failed, expired), and each day's reconciliation.",
            },
            "consumeDossierEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/dossierEvents"},
                "summary": "The gateway consumes lifecycle events published by the one-stop system.",
            },
            "publishSyncResults": {
                "action": "send",
                "channel": {"$ref": "#/channels/syncResults"},
                "summary": "The gateway reports each sync outcome back to the one-stop system, and answers each "
                "input record that is not a dossier event.",
            },
        },
        "components": {
            "messages": {
                "PostalCommand": {
                    "name": "PostalCommand",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/postal-command.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/postal/{name}.json", "payload": payload}
                        for name, payload in examples("postal").items()
                    ],
                },
                "PostalMessage": {
                    "name": "PostalMessage",
                    "summary": "A postal event, the answer to a postal command, or the answer to an unreadable one.",
                    "bindings": {"kafka": {"key": invalid_key}},
                    "payload": {"$ref": "./schemas/postal-event.v1.json"},
                },
                "TaxCommand": {
                    "name": "TaxCommand",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/tax-command.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/tax/{name}.json", "payload": payload}
                        for name, payload in examples("tax").items()
                    ],
                },
                "TaxMessage": {
                    "name": "TaxMessage",
                    "summary": "A tax event, the answer to a tax command, or the answer to an unreadable one.",
                    "bindings": {"kafka": {"key": invalid_key}},
                    "payload": {"$ref": "./schemas/tax-event.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/tax/events/{name}.json", "payload": payload}
                        for name, payload in examples("tax/events").items()
                    ],
                },
                "PopulationLookup": {
                    "name": "PopulationLookup",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/population-lookup.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/population_db/{name}.json", "payload": payload}
                        for name, payload in examples("population_db").items()
                    ],
                },
                "PopulationReply": {
                    "name": "PopulationReply",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/population-reply.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/population_db/replies/{name}.json",
                         "payload": payload}
                        for name, payload in examples("population_db/replies").items()
                    ],
                },
                "PopulationMessage": {
                    "name": "PopulationMessage",
                    "summary": "That a dossier consulted the population database, or the answer to an unreadable "
                    "lookup.",
                    "bindings": {"kafka": {"key": invalid_key}},
                    "payload": {"$ref": "./schemas/population-event.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/population_db/events/{name}.json",
                         "payload": payload}
                        for name, payload in examples("population_db/events").items()
                    ],
                },
                "PaymentCommand": {
                    "name": "PaymentCommand",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/payment-command.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/payment/{name}.json", "payload": payload}
                        for name, payload in examples("payment").items()
                    ],
                },
                "PaymentMessage": {
                    "name": "PaymentMessage",
                    "summary": "A payment event, the answer to a fee request, or the answer to an unreadable one.",
                    "bindings": {"kafka": {"key": {
                        "type": "string",
                        "description": "the dossier code; reconciliation:<yyyy-mm-dd> for payment.reconciled; none "
                        "for an unreadable record without a dossier key",
                    }}},
                    "payload": {"$ref": "./schemas/payment-event.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/payment/events/{name}.json", "payload": payload}
                        for name, payload in examples("payment/events").items()
                    ],
                },
                "DossierEvent": {
                    "name": "DossierEvent",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/dossier-event.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/{name}.json", "payload": payload}
                        for name, payload in examples().items()
                    ],
                },
                "SyncResult": {
                    "name": "SyncResult",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/sync-result.v1.json"},
                },
                "InputInvalid": {
                    "name": "InputInvalid",
                    "summary": "An input record that is not a dossier event: why, and where it was (contract 1.1).",
                    "bindings": {"kafka": {"key": invalid_key}},
                    "payload": {"$ref": "./schemas/sync-result-input-invalid.v1.1.json"},
                    "examples": [
                        {"name": "occurred_at-without-offset", "summary": "a dossier.received without its "
                         "occurred_at offset, keyed by its dossier code", "payload": input_invalid_example()},
                    ],
                },
            }
        },
    }


def rendered() -> dict[str, str]:
    """Path relative to contracts/ → exact file content."""
    files = {f"schemas/{name}": schema for name, schema in json_schemas().items()}
    files["asyncapi.json"] = asyncapi()
    return {path: json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n" for path, doc in files.items()}


def main() -> int:
    """Write every contract file; print what changed."""
    root = Path(__file__).parent
    for rel, text in rendered().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote contracts/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
