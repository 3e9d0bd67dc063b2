"""The ledger's chain walk on in-memory chains: the diagnoses `make mutants` found untested.

`Ledger.verify` reads rows from the database and hands them one by one to `_ChainChecker`; the store tests
(tests/integration/test_store_ledger.py) cover the common tampering on both backends. The cases here need
many rows, or rows placed where SQL tampering is clumsy, so they feed the checker directly: a report cut
after 50 problems, a chain emptied, a first row edited, links to the genesis, the bounded memory of recent
hashes and the bounded search for renumbered rows.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gateway.store import ledger
from gateway.store.ledger import (
    GENESIS_HASH,
    ChainHead,
    ExchangeEntry,
    LedgerHead,
    LedgerRecord,
    compute_record_hash,
    sha256_hex,
)

T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


def entry(i: int) -> ExchangeEntry:
    return ExchangeEntry(
        adapter="national_portal",
        operation="sync_dossier",
        dossier_code=f"D-{i % 3}",
        event_id=f"evt-{i}",
        idempotency_key=f"k-{i}",
        request_hash=sha256_hex(f"request {i}"),
        outcome="ok",
        started_at=T0 + timedelta(seconds=i),
        finished_at=T0 + timedelta(seconds=i, milliseconds=5),
    )


def sealed(seq: int, prev_hash: str, i: int) -> LedgerRecord:
    """A record whose own hash is valid at `seq` (genuine, or forged by someone who knows the format)."""
    e = entry(i)
    values = {f.name: getattr(e, f.name) for f in dataclasses.fields(ExchangeEntry)}
    return LedgerRecord(**values, seq=seq, prev_hash=prev_hash, record_hash=compute_record_hash(seq, e, prev_hash))


def chain(n: int) -> list[LedgerRecord]:
    records: list[LedgerRecord] = []
    for seq in range(1, n + 1):
        records.append(sealed(seq, records[-1].record_hash if records else GENESIS_HASH, seq))
    return records


def at(record: LedgerRecord, seq: int) -> LedgerRecord:
    """The same row moved to another seq (content and hashes intact)."""
    return dataclasses.replace(record, seq=seq)


def walk(records: list[LedgerRecord], head: LedgerRecord | ChainHead | None) -> list[str]:
    checker = ledger._ChainChecker()
    if isinstance(head, LedgerRecord):
        head = ChainHead(head.seq, head.record_hash)
    checker.head = head or ChainHead(0, GENESIS_HASH)
    for record in records:
        checker.check(record)
    checker.finish()
    return checker.report()


def test_a_clean_chain_has_no_problems() -> None:
    records = chain(5)
    assert walk(records, records[-1]) == []
    assert walk([], None) == []


def test_the_report_keeps_50_problems_and_counts_the_rest() -> None:
    records = [dataclasses.replace(r, detail="edited") for r in chain(60)]
    problems = walk(records, records[-1])
    assert problems[:50] == [f"seq {s}: record edited (hash mismatch)" for s in range(1, 51)]
    assert problems[50:] == ["... and 10 more problem(s)"]


def test_a_chain_emptied_entirely_is_reported_from_seq_1() -> None:
    records = chain(3)
    assert walk([], records[-1]) == ["seq 1..3: record(s) deleted from the end (the chain head is at seq 3)"]


def test_an_edited_link_in_the_first_record() -> None:
    first, *rest = chain(3)
    edited = dataclasses.replace(first, prev_hash=sha256_hex("elsewhere"))
    # The second line blames a "seq 0" that does not exist: the link check knows no better (pinned as is).
    assert walk([edited, *rest], rest[-1]) == [
        "seq 1: record edited (hash mismatch)",
        "seq 0: record replaced or edited and re-hashed (seq 1's prev_hash does not match it)",
    ]


def test_a_row_forged_to_link_to_the_genesis_marks_everything_before_it_inserted() -> None:
    records = chain(5)
    forged = sealed(3, GENESIS_HASH, 903)
    assert walk([*records[:2], forged, *records[3:]], records[-1]) == [
        "seq 1..2: record(s) inserted (seq 3 links to seq 0)",
        "seq 3: record replaced or edited and re-hashed (seq 4's prev_hash does not match it)",
    ]


def test_a_row_inserted_at_the_start_renumbers_the_first_genuine_row() -> None:
    # The genuine seq 1 moved to seq 2: its original seq is 1, the lowest there is.
    records = chain(3)
    forged = sealed(1, GENESIS_HASH, 901)
    assert walk([forged, *(at(r, r.seq + 1) for r in records)], records[-1]) == [
        "seq 1: record(s) inserted (seq 2 links to seq 0)",
        "seq 2..4: 3 record(s) renumbered (content intact, seq changed)",
    ]


def test_rows_inserted_in_place_of_a_deleted_one_are_named() -> None:
    # seq 2 deleted; two forged rows take seq 2 and 3 and the genuine rest moves up by one.
    records = chain(5)
    forged2 = sealed(2, records[0].record_hash, 902)
    forged3 = sealed(3, forged2.record_hash, 903)
    moved = [at(r, r.seq + 1) for r in records[2:]]
    assert walk([records[0], forged2, forged3, *moved], records[-1]) == [
        "seq 4: record(s) inserted before it (seq 4 was seq 3)",
        "seq 4..6: 3 record(s) renumbered (content intact, seq changed)",
    ]


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remember 4 recent hashes instead of 4096, so that the window's edge is a few rows away."""
    monkeypatch.setattr(ledger, "_RECENT_HASHES", 4)


@pytest.mark.usefixtures("small_memory")
def test_a_link_back_within_the_window_is_recognised() -> None:
    records = chain(9)
    forged = sealed(10, records[5].record_hash, 910)  # links to seq 6, the oldest hash still remembered
    assert walk([*records, forged], forged) == ["seq 7..9: record(s) inserted (seq 10 links to seq 6)"]


@pytest.mark.usefixtures("small_memory")
def test_a_link_back_beyond_the_window_is_not() -> None:
    records = chain(9)
    forged = sealed(10, records[4].record_hash, 910)  # seq 5 is forgotten
    assert walk([*records, forged], forged) == [
        "seq 9: record replaced or edited and re-hashed (seq 10's prev_hash does not match it)"
    ]


@pytest.fixture
def short_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look for renumbering up to 2 places away instead of 16."""
    monkeypatch.setattr(ledger, "_MAX_RENUMBER", 2)


@pytest.mark.usefixtures("short_search")
def test_renumbering_within_the_search_is_recognised() -> None:
    records = chain(6)
    closed_up = [records[0], *(at(r, r.seq - 2) for r in records[3:])]  # seq 2 and 3 deleted
    assert walk(closed_up, records[-1]) == [
        "seq 2: record(s) deleted before it (seq 2 was seq 4)",
        "seq 2..4: 3 record(s) renumbered (content intact, seq changed)",
    ]


@pytest.mark.usefixtures("short_search")
def test_renumbering_beyond_the_search_reads_as_edits() -> None:
    records = chain(7)
    closed_up = [records[0], *(at(r, r.seq - 3) for r in records[4:])]  # seq 2, 3 and 4 deleted
    assert walk(closed_up, records[-1]) == [
        "seq 2: record edited (hash mismatch)",
        "seq 1: record replaced or edited and re-hashed (seq 2's prev_hash does not match it)",
        "seq 3: record edited (hash mismatch)",
        "seq 4: record edited (hash mismatch)",
        "seq 5..7: record(s) deleted from the end (the chain head is at seq 7)",
    ]


def test_ledger_head_after_a_batch_is_its_last_record() -> None:
    # The committer moves the head with a compare-and-set on exactly these two values.
    records = chain(3)
    assert LedgerHead.after(records) == LedgerHead(3, records[-1].record_hash)


def test_sha256_hex_hashes_text_as_utf8_and_bytes_as_they_are() -> None:
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("abc") == sha256_hex(b"abc") == abc
    assert sha256_hex("Cổng") == sha256_hex("Cổng".encode())
