"""The population lookup end to end: embedded broker, the population simulator over SOAP, an in-process gateway.

Each request is answered once on the reply topic it names (match, mismatch, not_found, refused, invalid,
failure), a population.consulted goes to the partner events topic, and every request leaves an access-log row.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from jsonschema import Draft202012Validator

from gateway import faults
from gateway.store.access_log import AccessLog, subject_hash
from tests.integration.population_harness import ACCESS_KEY, lookup, population_gateway
from tests.integration.portal_harness import eventually, produce
from tests.integration.postal_harness import dossier, read_until

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).resolve().parents[2] / "contracts/schemas"


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text("utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _by_request(replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["source_event_id"]: r for r in replies if r["event_type"] == "population.lookup_reply"}


async def test_each_lookup_is_answered_once_on_its_reply_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with population_gateway(kafka_bootstrap, tmp_path) as run:
        a, b, c = run.sim.some(3)
        reply_topic = run.replies_prefix + "desk-1"
        ids = [uuid.uuid4() for _ in range(6)]
        requests = [
            lookup(a, reply_topic=reply_topic, event_id=ids[0], wanted=["permanent_address"]),  # no address
            lookup(b, reply_topic=reply_topic, event_id=ids[1], full_name="Somebody Else"),  # mismatch
            lookup(reply_topic=reply_topic, event_id=ids[2], id_number="001190000000", date_of_birth="1990"),  # none
            lookup(c, reply_topic=reply_topic, event_id=ids[3], purpose="household_registration",
                   wanted=["permanent_address", "hometown"]),  # address allowed, hometown withheld
            lookup(a, reply_topic=reply_topic, event_id=ids[4], id_number="12345"),  # invalid
            lookup(a, reply_topic=reply_topic, event_id=ids[0]),  # the first again: one answer
        ]
        code = dossier(1, day="240115")
        await produce(kafka_bootstrap, run.lookups, [(code.encode(), r) for r in requests])
        got = await read_until(kafka_bootstrap, reply_topic, lambda m: len(_by_request(m)) == 5)
        replies = _by_request(got)
        consulted = await read_until(kafka_bootstrap, run.events, lambda m: len({x["event_id"] for x in m}) == 5)
        assert run.gw is not None and run.gw.store is not None
        rows = await AccessLog(run.gw.store.engine).query(adapter="population_db")
        retention = await _retention(kafka_bootstrap, reply_topic)
    assert retention == str(run.settings.replies.retention_ms)  # created by the gateway, short-lived
    assert {k: v["outcome"] for k, v in replies.items()} == {
        str(ids[0]): "match", str(ids[1]): "mismatch", str(ids[2]): "not_found", str(ids[3]): "match",
        str(ids[4]): "invalid",
    }
    assert replies[str(ids[1])]["mismatched_fields"] == ["full_name"]
    assert "citizen" not in replies[str(ids[0])]  # verification only: nothing of the record
    assert replies[str(ids[0])]["withheld"] == ["permanent_address"]
    assert replies[str(ids[3])]["citizen"]["permanent_address"]["detail"] == c.permanent.detail
    assert set(replies[str(ids[3])]["citizen"]) == {"permanent_address"}
    assert replies[str(ids[3])]["withheld"] == ["hometown"]
    assert "12 digits" in replies[str(ids[4])]["reason"]
    assert len([m for m in got if m["source_event_id"] == str(ids[0])]) == 1  # the repeat was a duplicate
    reply_schema = _validator("population-reply.v1.json")
    for message in got:
        reply_schema.validate(message)
    event_schema = _validator("population-event.v1.json")
    for message in consulted:
        event_schema.validate(message)
        assert message["event_type"] == "population.consulted"
    # The invalid one never reached the database; the verification-only ones never fetched a record.
    assert run.sim.requests["XacThucThongTinCongDan"] == 3 and run.sim.requests["TraCuuThongTinCongDan"] == 1
    assert {r.event_id: r.outcome for r in rows} == {str(k): replies[str(k)]["outcome"] for k in ids[:5]}
    assert {r.subject_hash for r in rows if r.event_id == str(ids[0])} == {subject_hash(ACCESS_KEY.encode(),
                                                                                        a.id_number)}


async def test_a_reply_topic_outside_the_prefix_is_refused_as_input(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with population_gateway(kafka_bootstrap, tmp_path) as run:
        (a,) = run.sim.some(1)
        code = dossier(2, day="240115")
        await produce(kafka_bootstrap, run.lookups, [(code.encode(), lookup(a, reply_topic=run.events))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: any(
            x["event_type"] == "gateway.input_invalid" for x in m))
    invalid = [m for m in got if m["event_type"] == "gateway.input_invalid"]
    assert len(invalid) == 1 and "reply_topic: must start with" in invalid[0]["reason"]
    assert not [m for m in got if m["event_type"] == "population.lookup_reply"]  # nothing written to the wrong topic
    assert sum(run.sim.requests.values()) == 0


@pytest.mark.parametrize("point", ["reply.publish", "settle"])
async def test_a_fault_at_a_lookup_step_loses_nothing_and_answers_once(
    kafka_bootstrap: str, tmp_path: Path, point: str, disarmed: None
) -> None:
    async with population_gateway(kafka_bootstrap, tmp_path) as run:
        citizens = run.sim.some(4)
        reply_topic = run.replies_prefix + "desk-f"
        faults.arm(point, "raise", nth=2)
        ids = [uuid.uuid4() for _ in citizens]
        await produce(kafka_bootstrap, run.lookups, [
            (dossier(10 + i, day="240115").encode(), lookup(c, reply_topic=reply_topic, event_id=ids[i]))
            for i, c in enumerate(citizens)
        ])
        got = await read_until(kafka_bootstrap, reply_topic, lambda m: len(_by_request(m)) == len(ids))
        assert run.gw is not None and run.gw.store is not None
        log = AccessLog(run.gw.store.engine)
        assert await eventually(lambda: _rows(log, len(ids)))
    assert point in faults.fired
    assert {r["source_event_id"]: r["outcome"] for r in got} == {str(i): "match" for i in ids}
    assert len({r["event_id"] for r in got}) == len(ids)  # a repeat is the same reply (same id)


async def _retention(bootstrap: str, topic: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = described[0].resources[0][4]
    return next((str(value) for name, value, *_ in entries if name == "retention.ms"), None)


async def _rows(log: AccessLog, n: int) -> bool:
    return len(await log.query()) == n


async def test_officer_and_agency_limits_hold_under_concurrent_load(kafka_bootstrap: str, tmp_path: Path) -> None:
    """300 lookups of 4 officers of one agency, on 300 dossiers (so up to max_in_flight run at once): exactly the
    agency's share is asked, no officer more than theirs, the rest refused with the reason, each answered once."""
    adapter = {"per_officer_limit": "20/minute", "per_agency_limit": "50/minute"}
    async with population_gateway(kafka_bootstrap, tmp_path, adapter=adapter, latency_s=0.02) as run:
        people = run.sim.some(300)
        reply_topic = run.replies_prefix + "desk-load"
        officers = ["CB-1", "CB-2", "CB-3", "CB-4"]
        ids = [uuid.uuid4() for _ in people]
        await produce(kafka_bootstrap, run.lookups, [
            (dossier(100 + i, day="240116").encode(),
             lookup(p, reply_topic=reply_topic, event_id=ids[i], officer=officers[i % 4], dossier=dossier(
                 100 + i, day="240116")))
            for i, p in enumerate(people)
        ])
        got = await read_until(kafka_bootstrap, reply_topic, lambda m: len(_by_request(m)) == len(ids))
    replies = _by_request(got)
    by_officer: dict[str, int] = {}
    for i, request_id in enumerate(ids):
        if replies[str(request_id)]["outcome"] == "match":
            by_officer[officers[i % 4]] = by_officer.get(officers[i % 4], 0) + 1
    refused = [r for r in replies.values() if r["outcome"] == "refused"]
    assert sum(by_officer.values()) == 50 and max(by_officer.values()) <= 20
    assert len(refused) == 250 and all(r["reason"].startswith("rate limit:") for r in refused)
    assert sum(run.sim.officers.values()) == 50 and max(run.sim.officers.values()) <= 20
    assert run.sim.max_in_flight > 1  # they did run at once
