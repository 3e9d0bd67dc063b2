"""The ledger's record hash is a frozen format: a known answer, and every hashed field moves it.

Records already written must keep verifying forever, so `compute_record_hash` may never change what it
hashes or how. The known answers below were computed once from the code as it was when the format was
frozen (HASH_FORMAT 1) and are pinned as literals; if one of these tests fails, do not update the
literal: a new format needs a version of its own (see the migration note in gateway/store/ledger.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.store.ledger import GENESIS_HASH, ExchangeEntry, compute_record_hash

HANOI = timezone(timedelta(hours=7))
EVENT_ID = "0b7e6a52-3f5c-4a8e-9d2b-8c1f0e6d4a21"

# Every field set to a non-default value: attempts, detail (non-ASCII, so the UTF-8 encoding is pinned),
# partner_reference, response_hash and both times (one given in +07:00: the hash is over the UTC instant).
ENTRY = ExchangeEntry(
    adapter="national_portal",
    operation="DongBoHoSoMC",
    dossier_code="H12.1-260301-0042",
    event_id=EVENT_ID,
    idempotency_key=f"national_portal:DongBoHoSoMC:{EVENT_ID}",
    request_hash="a" * 64,
    response_hash="b" * 64,
    partner_reference="DVCQG-000042",
    outcome="retryable_error",
    attempts=3,
    started_at=datetime(2026, 3, 1, 15, 30, 0, 123_456, tzinfo=HANOI),
    finished_at=datetime(2026, 3, 1, 8, 30, 1, 654_321, tzinfo=UTC),
    detail="Cổng DVC: HTTP 503",
)
SEQ = 42
PREV_HASH = "c" * 64

# The exact bytes that are hashed (format 1): keys sorted, no spaces, UTF-8 without \u escapes, times
# as UTC with microseconds and a Z. Kept literally so that a reader can check a record by hand.
CANONICAL = (
    '{"adapter":"national_portal","attempts":3,"detail":"Cổng DVC: HTTP 503","dossier_code":"H12.1-260301-0042",'
    '"event_id":"0b7e6a52-3f5c-4a8e-9d2b-8c1f0e6d4a21","finished_at":"2026-03-01T08:30:01.654321Z","format":1,'
    '"idempotency_key":"national_portal:DongBoHoSoMC:0b7e6a52-3f5c-4a8e-9d2b-8c1f0e6d4a21",'
    '"operation":"DongBoHoSoMC","outcome":"retryable_error","partner_reference":"DVCQG-000042",'
    '"prev_hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",'
    '"request_hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",'
    '"response_hash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",'
    '"seq":42,"started_at":"2026-03-01T08:30:00.123456Z"}'
)
KNOWN_HASH = "3fe270b716d2c38078ffb377c8c1e3b6df58f32512ce6605bac547ad94c4e09f"

# The first record of a chain with only the required fields: pins how None and the defaults are hashed.
MINIMAL = ExchangeEntry(
    adapter="tax",
    operation="submit",
    dossier_code="D-1",
    event_id="e-1",
    idempotency_key="k-1",
    request_hash="d" * 64,
    outcome="ok",
    started_at=datetime(2026, 1, 1, tzinfo=UTC),
    finished_at=datetime(2026, 1, 1, tzinfo=UTC),
)
MINIMAL_HASH = "49073712f7d168bff3196ccc632f57d747b70fe5e4e2eb5a06849817b388ead6"


def test_known_answer() -> None:
    assert compute_record_hash(SEQ, ENTRY, PREV_HASH) == KNOWN_HASH


def test_known_answer_is_the_sha256_of_the_canonical_document() -> None:
    assert hashlib.sha256(CANONICAL.encode("utf-8")).hexdigest() == KNOWN_HASH


def test_known_answer_with_defaults_at_the_genesis() -> None:
    assert compute_record_hash(1, MINIMAL, GENESIS_HASH) == MINIMAL_HASH


def test_the_same_instant_in_another_zone_hashes_the_same() -> None:
    # What the database gives back is UTC; a record written with local times must still verify.
    in_utc = dataclasses.replace(ENTRY, started_at=ENTRY.started_at.astimezone(UTC))
    assert compute_record_hash(SEQ, in_utc, PREV_HASH) == KNOWN_HASH


# One different value per hashed input. Times move by a single microsecond, so a format that dropped
# sub-second precision would be caught; optional fields also go to None.
CHANGES: list[tuple[str, Any]] = [
    ("adapter", "tax"),
    ("operation", "CapNhatTienDoHoSoMC"),
    ("dossier_code", "H12.1-260301-0043"),
    ("event_id", "0b7e6a52-3f5c-4a8e-9d2b-8c1f0e6d4a22"),
    ("idempotency_key", f"national_portal:DongBoHoSoMC:{EVENT_ID}:replay-1"),
    ("request_hash", "A" * 64),
    ("response_hash", "B" * 64),
    ("response_hash", None),
    ("partner_reference", "DVCQG-000043"),
    ("partner_reference", None),
    ("outcome", "ok"),
    ("attempts", 4),
    ("attempts", 0),
    ("started_at", ENTRY.started_at + timedelta(microseconds=1)),
    ("finished_at", ENTRY.finished_at + timedelta(microseconds=1)),
    ("detail", "Cổng DVC: HTTP 504"),
    ("detail", ""),
    ("seq", SEQ + 1),
    ("prev_hash", "c" * 63 + "d"),
    ("prev_hash", GENESIS_HASH),
]


def _hash_with(name: str, value: Any) -> str:
    seq, prev_hash, entry = SEQ, PREV_HASH, ENTRY
    if name == "seq":
        seq = value
    elif name == "prev_hash":
        prev_hash = value
    else:
        entry = dataclasses.replace(ENTRY, **{name: value})
    return compute_record_hash(seq, entry, prev_hash)


@pytest.mark.parametrize(("name", "value"), CHANGES, ids=[f"{n}={v!r}"[:40] for n, v in CHANGES])
def test_changing_one_hashed_input_changes_the_hash(name: str, value: Any) -> None:
    # A field left out of the hashed document would fail here: editing it would go unnoticed by verify.
    assert _hash_with(name, value) != KNOWN_HASH


def test_every_field_of_an_entry_has_a_change_above() -> None:
    # A field added to ExchangeEntry without a case above would not be shown to be hashed.
    hashed = {f.name for f in dataclasses.fields(ExchangeEntry)} | {"seq", "prev_hash"}
    assert {name for name, _ in CHANGES} == hashed


def test_no_two_changes_collide() -> None:
    # Every change gives a hash of its own: no two inputs are folded into one document value.
    hashes = [_hash_with(name, value) for name, value in CHANGES]
    assert len(set(hashes)) == len(hashes)
