"""The purpose policy, the rate limits under concurrency, what dead letters keep, and the reply topics' creation."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import pytest
from limits.storage import MemoryStorage
from pydantic import SecretStr

from adapters.population_db.handlers import failure_reply, redact
from adapters.population_db.policy import PurposePolicy, RateLimits
from contracts.export import examples
from contracts.population import CitizenField, parse_lookup, parse_reply
from gateway.delivery.replies import ReplyTopicPublisher
from gateway.soap.security import NdxpBasicAuth, ndxp_signature

ADDRESS = CitizenField.PERMANENT_ADDRESS


def _policy(**kw: Any) -> PurposePolicy:
    return PurposePolicy({"household_registration": [ADDRESS, CitizenField.GENDER], "identity_verification": []},
                         refused=["marketing"], refuse_unlisted=kw.get("refuse_unlisted", False))


def test_a_purpose_that_does_not_allow_addresses_gets_none() -> None:
    decision = _policy().decide("identity_verification", [ADDRESS, CitizenField.GENDER])
    assert decision.refused is None and decision.give == frozenset()
    assert decision.withheld == (ADDRESS, CitizenField.GENDER)


def test_a_purpose_gets_what_it_allows_and_was_asked_for_only() -> None:
    decision = _policy().decide("household_registration", [ADDRESS, CitizenField.HOMETOWN])
    assert decision.give == {ADDRESS} and decision.withheld == (CitizenField.HOMETOWN,)
    assert _policy().decide("household_registration", []).give == frozenset()


def test_refused_and_unlisted_purposes() -> None:
    assert "not permitted" in (_policy().decide("marketing", []).refused or "")
    unlisted = _policy().decide("curiosity", [ADDRESS])
    assert unlisted.refused is None and unlisted.give == frozenset()  # default: verification only
    assert "not in the purpose policy" in (_policy(refuse_unlisted=True).decide("curiosity", []).refused or "")


async def test_officer_and_agency_limits_hold_under_concurrent_requests() -> None:
    limits = RateLimits(per_officer="5/minute", per_agency="12/minute", partner_quota="1000/second")
    officers = [f"CB-{i}" for i in range(4)]
    requests = [(f"r{i}", officers[i % 4]) for i in range(80)]
    answers = await asyncio.gather(*(limits.admit(rid, officer, "AG-1") for rid, officer in requests))
    admitted = [officer for (_, officer), why in zip(requests, answers, strict=True) if why is None]
    assert len(admitted) == 12  # the agency's limit binds first
    assert max(admitted.count(o) for o in officers) <= 5
    assert {why.split(":")[0] for why in answers if why} == {"rate limit"}
    one_admitted = next(rid for (rid, _), why in zip(requests, answers, strict=True) if why is None)
    one_refused = next((rid, o) for (rid, o), why in zip(requests, answers, strict=True) if why is not None)
    assert await limits.admit(one_admitted, "CB-0", "AG-1") is None  # admitted once: a retry goes on
    assert await limits.admit(*one_refused, "AG-1") is not None  # refused: still over the limits


async def test_a_request_refused_by_one_limit_is_counted_by_none() -> None:
    limits = RateLimits(per_officer="2/hour", per_agency="1/hour", partner_quota="1000/second")
    assert await limits.admit("first", "CB-1", "AG-1") is None
    assert "agency" in (await limits.admit("second", "CB-1", "AG-1") or "")  # over the agency's limit
    assert "agency" in (await limits.admit("third", "CB-1", "AG-1") or "")
    # CB-1 was charged once (the refusals counted nowhere): in another agency one more request goes on.
    assert await limits.admit("fourth", "CB-1", "AG-2") is None
    assert "officer" in (await limits.admit("fifth", "CB-1", "AG-3") or "")


async def test_a_request_admitted_once_is_not_counted_again() -> None:
    limits = RateLimits(per_officer="2/minute", per_agency="100/minute", partner_quota="1000/second")
    assert await limits.admit("same", "CB-1", "AG") is None
    for _ in range(5):
        assert await limits.admit("same", "CB-1", "AG") is None  # a retry of the same request
    assert await limits.admit("other", "CB-1", "AG") is None
    assert "officer" in (await limits.admit("third", "CB-1", "AG") or "")


async def test_the_partner_quota_says_how_long_to_wait() -> None:
    limits = RateLimits(per_officer="100/minute", per_agency="100/minute", partner_quota="3/second")
    waits = [await limits.quota_wait_s() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0] and all(0 < w <= 1.0 for w in waits[3:])


async def test_hits_start_no_thread_and_expired_entries_are_still_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = RateLimits(per_officer="3/second", per_agency="1000/second", partner_quota="1000/second")
    started: list[str] = []
    original = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    for i in range(200):  # 200 requests of 50 officers, far apart enough for limits' 10 ms timer to have ended
        await limits.admit(f"r{i}", f"CB-{i % 50}", "AG")
        if i % 20 == 0:
            await asyncio.sleep(0.02)
    assert started == []
    storage = limits._limiter.storage
    assert isinstance(storage, MemoryStorage) and len(storage.events) == 51  # 50 officers and the agency
    await asyncio.sleep(1.1)  # every entry of a 1-second window expired, and the last sweep is over a second old
    assert await limits.admit("late", "CB-late", "AG") is None
    remembered = {key for key, entries in storage.events.items() if entries}
    assert remembered == {"LIMITER/officer/CB-late/3/1/second", "LIMITER/agency/AG/1000/1/second"}
    assert started == []


def test_a_dead_letter_keeps_no_personal_field() -> None:
    raw = json.dumps(examples("population_db")["population.lookup"], ensure_ascii=False).encode()
    request = parse_lookup(raw)
    kept = redact(raw)
    for value in (request.id_number, request.full_name, request.date_of_birth):
        assert value.encode() not in kept
    doc = json.loads(kept)
    assert doc["event_id"] == str(request.event_id) and doc["reply_topic"] == request.reply_topic
    garbage = b'{"id_number": "001190001234", "full_name": "NGUY\xe1\xbb\x84N"'  # not even JSON
    assert b"001190001234" not in redact(garbage) and json.loads(redact(garbage))["redacted"]


def test_a_failure_reply_is_a_valid_reply_with_a_stable_id() -> None:
    request = parse_lookup(json.dumps(examples("population_db")["population.lookup"]))
    first = parse_reply(failure_reply("population_db", request, "dead_lettered", 7, "PartnerUnavailable: down"))
    again = parse_reply(failure_reply("population_db", request, "dead_lettered", 7, "PartnerUnavailable: down"))
    assert first.outcome == "failure" and first.event_id == again.event_id
    assert first.correlation_id == request.correlation_id and first.source_event_id == request.event_id


def test_ndxp_basic_auth_header() -> None:
    plugin = NdxpBasicAuth("https://ndxp.example/dancu", "gw", SecretStr("s3cret"), clock=lambda: 1700000000.123)
    _, headers = plugin.egress(None, {"SOAPAction": "x"}, None, None)  # type: ignore[arg-type]
    assert headers["Timestamp"] == "1700000000123" and headers["SOAPAction"] == "x"
    user, _, password = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert user == "gw"
    assert password == ndxp_signature("https://ndxp.example/dancu", "gw", "1700000000123", SecretStr("s3cret"))
    import hashlib

    assert password == hashlib.sha256(b"https://ndxp.example/dancugw1700000000123s3cret").hexdigest()
    assert "s3cret" not in repr(plugin.__dict__)


class _Recorder:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
                      ) -> None:
        self.published.append(topic)


async def test_a_reply_topic_is_created_once_before_its_first_reply() -> None:
    created: list[str] = []
    inner = _Recorder()

    async def ensure(topic: str) -> None:
        await asyncio.sleep(0.01)
        created.append(topic)

    publisher = ReplyTopicPublisher(inner, prefix="onestop.replies.", ensure=ensure)
    await asyncio.gather(*(publisher.publish("onestop.replies.a", b"x", key=None) for _ in range(10)))
    await publisher.publish("gateway.partner-events.population_db.v1", b"x", key=None)
    await publisher.publish("onestop.replies.b", b"x", key=None)
    assert created == ["onestop.replies.a", "onestop.replies.b"]
    assert len(inner.published) == 12


async def test_a_failed_creation_publishes_nothing_and_is_tried_again() -> None:
    inner = _Recorder()
    calls = 0

    async def ensure(topic: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("admin unreachable")

    publisher = ReplyTopicPublisher(inner, prefix="onestop.replies.", ensure=ensure)
    with pytest.raises(ConnectionError):
        await publisher.publish("onestop.replies.a", b"x", key=None)
    await publisher.publish("onestop.replies.a", b"x", key=None)
    assert calls == 2 and inner.published == ["onestop.replies.a"]
