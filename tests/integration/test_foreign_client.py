"""A producer that is not ours (librdkafka, via confluent-kafka) writes by the published JSON Schema alone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from contracts.export import SCHEMA_DIR
from gateway.demo import count_lost
from gateway.loadgen.journeys import Journey, encode, generate_journeys
from tests.integration.portal_harness import portal_gateway, wait_until

SCHEMA = json.loads((SCHEMA_DIR / "dossier-event.v1.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
REASON = "__connect.errors.exception.message"


def schema_valid_messages(journey: Journey) -> list[tuple[bytes, bytes]]:
    """The journey's events as plain JSON documents, each checked against the published schema only."""
    out = []
    for event in journey.events:
        doc = json.loads(encode(event))
        VALIDATOR.validate(doc)  # raises if the document does not follow the published contract
        out.append((doc["dossier_code"].encode(), json.dumps(doc, ensure_ascii=False).encode("utf-8")))
    return out


def librdkafka_produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Blocking: send in order with acks=all and wait until every record is acknowledged."""
    errors: list[Any] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "client.id": "foreign-one-stop"})
    for k, v in items:
        producer.produce(topic, value=v, key=k, on_delivery=on_delivery)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, errors


def librdkafka_read(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[Any]:
    """Blocking: read one-partition `topic` from the start (assigned, no group join) until `expect` records."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "foreign-dlt-reader",
        "session.timeout.ms": 6000,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(msg)
    finally:
        consumer.close()
    return out


def test_schema_rejects_what_the_gateway_must_dead_letter() -> None:
    """The schema violation used below really violates the published schema (not just our parser)."""
    doc = json.loads(encode(generate_journeys(1, seed=41)[0].events[0]))
    del doc["dossier_code"]
    assert not VALIDATOR.is_valid(doc)


async def test_foreign_producer_is_synced_and_its_malformed_messages_are_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    before, after = generate_journeys(2, seed=41)
    good_before = schema_valid_messages(before)
    good_after = schema_valid_messages(after)
    violation = json.loads(good_before[0][1])
    del violation["dossier_code"]
    violation["event_id"] = "not-a-uuid"
    assert not VALIDATOR.is_valid(violation)
    malformed = [
        (b"broken", b'{"event_type": "dossier.received", '),  # not JSON at all
        (before.dossier_code.encode(), json.dumps(violation).encode()),  # JSON, but not by the schema
    ]
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await asyncio.to_thread(librdkafka_produce, h.bootstrap, h.input_topic, good_before)
        assert await wait_until(lambda: not count_lost([before], h.sim.dossiers), timeout_s=45), h.sim.dossiers

        await asyncio.to_thread(librdkafka_produce, h.bootstrap, h.input_topic, malformed)
        await asyncio.to_thread(librdkafka_produce, h.bootstrap, h.input_topic, good_after)
        # The consumer survived the malformed records: what came after them still reaches the portal.
        assert await wait_until(lambda: not count_lost([after], h.sim.dossiers), timeout_s=45), h.sim.dossiers
        dead = await asyncio.to_thread(librdkafka_read, h.bootstrap, h.dlt_topic, len(malformed))
        assert h.sim.stats["duplicate_effects"] == 0

    assert sorted(m.value() for m in dead) == sorted(v for _, v in malformed)
    reasons = {}
    for m in dead:
        headers = {k: (v or b"").decode() for k, v in (m.headers() or [])}
        assert headers.get(REASON), headers
        assert headers["__connect.errors.topic"] == h.input_topic
        reasons[m.value()] = headers[REASON]
    assert "JSON" in reasons[malformed[0][1]]
    # The validation reason names the offending fields without echoing their values.
    assert "dossier_code" in reasons[malformed[1][1]]
    assert "event_id" in reasons[malformed[1][1]]
    assert "not-a-uuid" not in reasons[malformed[1][1]]
    # The dead letters did not touch the dossier whose key the violation carried.
    assert not count_lost([before], h.sim.dossiers)
