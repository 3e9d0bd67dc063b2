"""The request/reply flow: replies only to a reply topic under the configured prefix, no answer of its own for a
delivered request, failures worded on the reply topic, dead letters redacted; other flows unchanged."""

from __future__ import annotations

import json
import re

import pytest

from adapters.population_db.handlers import failure_reply, redact
from contracts.export import examples
from contracts.population import parse_lookup, parse_reply
from contracts.results import SyncOutcome
from gateway.delivery.flows import LIFECYCLE, RequestReplyFlow, answer_topic, dead_letter_value
from gateway.errors import InvalidMessage
from gateway.pipeline import decode

FLOW = RequestReplyFlow(parse_lookup, failure_reply=failure_reply, redact=redact, reply_prefix="onestop.replies.")


def _request(**fields: object) -> bytes:
    doc = examples("population_db")["population.lookup"]
    doc.update(fields)
    return json.dumps(doc, ensure_ascii=False).encode()


def test_a_reply_topic_under_the_prefix_is_where_every_answer_goes() -> None:
    message = FLOW.parse(_request(reply_topic="onestop.replies.desk-9"))
    assert answer_topic(FLOW, message) == "onestop.replies.desk-9"
    assert FLOW.answer("population_db", message, SyncOutcome.SYNCED, 1) is None  # the delivery published it
    failed = FLOW.answer("population_db", message, SyncOutcome.DEAD_LETTERED, 9, reason="PartnerUnavailable: x")
    assert failed is not None
    reply = parse_reply(failed)
    assert reply.outcome == "failure" and reply.reason is not None and reply.reason.startswith("dead_lettered:")
    assert reply.correlation_id == message.correlation_id and reply.attempts == 9


@pytest.mark.parametrize("topic", [
    "gateway.partner-events.population_db.v1", "gateway.sync-results.v1", "onestop.replies", "onestop.repliesX.a",
    "onestop.dossier-events.v1",
])
def test_any_other_topic_is_invalid_input_with_the_reason(topic: str) -> None:
    with pytest.raises(InvalidMessage, match=re.escape("reply_topic: must start with 'onestop.replies.'")):
        decode(_request(reply_topic=topic), 1_000_000, FLOW.parse)


def test_a_topic_name_kafka_refuses_is_invalid_by_the_contract() -> None:
    with pytest.raises(InvalidMessage, match="reply_topic"):
        decode(_request(reply_topic="onestop.replies.a b"), 1_000_000, FLOW.parse)


def test_dead_letters_of_this_flow_are_redacted_and_others_kept_whole() -> None:
    raw = _request(reply_topic="onestop.replies.desk-9")
    assert b"051190001234" in raw
    assert b"051190001234" not in dead_letter_value(FLOW, raw)
    assert dead_letter_value(LIFECYCLE, raw) == raw
    assert answer_topic(LIFECYCLE, object()) is None


def test_the_flow_needs_a_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RequestReplyFlow(parse_lookup, failure_reply=failure_reply, redact=redact, reply_prefix="")
