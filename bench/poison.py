"""poison: 1,000 malformed or hostile messages mixed into 20,000 valid ones; one gateway process.

Every bad message must reach the dead-letter topic with a reason, every valid dossier must reach the
portal, and the consumer must keep going (no crash, no restart, no stuck partition).

The bad messages are drawn with Hypothesis (seeded, so the same run draws the same bytes) from templates:
real events of a separate generation (other receipt dates, so no dossier code is shared with the valid
load) that are then broken in one way each. A drawn message that would still pass the contract is broken
once more (its `dossier_version` becomes a string), so every "bad" message is provably bad; the count of
those is reported as `reinforced`. Bad messages have no key or a random one, never a valid dossier's code.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from bench.crash import journeys_for
from bench.harness import (
    DLT_TOPIC,
    INPUT_TOPIC,
    RESULTS_TOPIC,
    Deadline,
    GatewayProcess,
    ProcSampler,
    TopicWatcher,
    committed_offsets,
    header,
    produce,
    read_topic,
    stack,
)
from gateway.dead_letters import H_EXC_CLASS, H_EXC_MESSAGE
from gateway.demo import count_lost, interleave
from gateway.errors import InvalidMessage
from gateway.loadgen.journeys import VIETNAM_TZ, encode, generate_journeys
from gateway.pipeline import decode

MAX_BYTES = 1_000_000  # the gateway's default limit (kafka.max_message_bytes)
KNOWN_TYPES = (
    "dossier.received", "dossier.processing_step", "dossier.supplement_requested", "dossier.supplemented",
    "dossier.financial_obligation", "dossier.overdue_apology", "dossier.not_accepted", "dossier.refused",
    "dossier.withdrawn", "dossier.stopped", "dossier.resolved", "dossier.result_returned", "dossier.rated",
)


@dataclass(frozen=True)
class PoisonConfig:
    valid_events: int = 20_000
    bad: int = 1_000
    huge: int = 10  # of the bad ones, 1.0-2.5 MB each (memory and broker load stay reasonable)
    latency_ms: float = 20.0
    seed: int = 2019
    bad_seed: int = 13
    deadline_s: float = 300.0
    stall_s: float = 20.0  # once every valid dossier is synced: give up waiting for dead letters after this


FULL = PoisonConfig()
QUICK = PoisonConfig(valid_events=2_000, bad=100, huge=2, deadline_s=120.0)


# -- drawing bad messages ------------------------------------------------------------------------------

Doc = dict[str, Any]


def _dump(doc: Doc) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _copy(doc: Doc) -> Doc:
    copied: Doc = json.loads(json.dumps(doc))
    return copied


_JSON_SCALARS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=30)
)
_JSON_ANY = st.one_of(
    _JSON_SCALARS,
    st.lists(_JSON_SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=8), _JSON_SCALARS, max_size=3),
)


def bad_json(data: st.DataObject, doc: Doc) -> bytes:
    raw = _dump(doc)
    how = data.draw(st.sampled_from(["truncated", "text", "binary", "python_repr", "trailing", "unquoted"]))
    if how == "truncated":
        return raw[: data.draw(st.integers(1, len(raw) - 1))]
    if how == "text":
        return data.draw(st.text(max_size=200)).encode()
    if how == "binary":
        return data.draw(st.binary(max_size=300))
    if how == "python_repr":
        return repr(doc).encode()
    if how == "trailing":
        return raw + data.draw(st.sampled_from([b",", b"}", b"{}", b"\n{", b" x"]))
    return raw.replace(b'"event_id"', b"event_id", 1)


def _not_a(kind: type) -> Callable[[object], bool]:
    return lambda value: type(value) is not kind


def wrong_types(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_leaves(doc)))
        old = _get(doc, path)
        new = data.draw(_JSON_ANY.filter(_not_a(type(old))))
        _set(doc, path, new)
    return _dump(doc)


def huge(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    size = data.draw(st.integers(MAX_BYTES + 1, 2_500_000))
    fill = data.draw(st.sampled_from(["A", "ả", " ", "0"]))
    where = data.draw(st.sampled_from([("snapshot", "summary"), ("snapshot", "applicant", "full_name"), ("junk",)]))
    _set(doc, where, fill * (size // len(fill.encode())))
    return _dump(doc)


def bad_dossier_code(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    good = doc["dossier_code"]
    code = data.draw(st.one_of(
        st.text(max_size=40),
        st.sampled_from([
            good.lower(), good + " ", " " + good, good.replace("-", "_"), good[:-1], good + "0",
            good.rsplit("-", 2)[0] + "-191332-0001",  # 32 Dec 2019
            good.rsplit("-", 2)[0] + "-190229-0001",  # 29 Feb 2019
            good.replace(".", "", 1), "", "NULL", good + "\n", good.replace("H", "Н"),  # Cyrillic Н
        ]),
    ))
    doc["dossier_code"] = code
    if data.draw(st.booleans()):
        doc["snapshot"]["code"] = code
    return _dump(doc)


_FUTURE_YEAR = (datetime.now(VIETNAM_TZ).year % 100) + 1


def invalid_id(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    bad = data.draw(st.one_of(
        st.from_regex(r"\A[0-9]{1,11}\Z"),  # too short
        st.from_regex(r"\A[0-9]{13,16}\Z"),  # too long
        st.from_regex(r"\A(000|09[7-9]|[1-9][0-9]{2})[0-9]{9}\Z"),  # unknown province
        st.integers(_FUTURE_YEAR, 99).map(lambda yy: f"0222{yy:02d}123456"),  # born in the future
        st.from_regex(r"\A[0-9]{6}[A-Z][0-9]{5}\Z"),  # a letter
        st.text(max_size=14),
        st.integers(0, 10**12),  # a number, not a string
    ))
    for applicant in (doc.get("applicant"), doc["snapshot"]["applicant"]):
        if applicant is not None:
            applicant["kind"] = "citizen"
            applicant["id_number"] = bad
    return _dump(doc)


def unknown_event_type(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    doc["event_type"] = data.draw(st.one_of(
        st.sampled_from([
            "dossier.deleted", "DOSSIER.RECEIVED", "dossier.received ", "dossier_received", "dossier.", "",
            "payment.completed", "dossier.rated.v2",
        ]),
        st.text(max_size=30).filter(lambda t: t not in KNOWN_TYPES),
        st.integers(),
        st.none(),
    ))
    return _dump(doc)


_INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82")


def wrong_encoding(data: st.DataObject, doc: Doc) -> bytes:
    text = json.dumps(doc, ensure_ascii=False)
    how = data.draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "cp1258", "latin-1", "invalid_utf8"]))
    if how == "cp1258":  # the Vietnamese Windows code page: base letters + combining marks
        return unicodedata.normalize("NFD", text).encode("cp1258", errors="replace")
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    if how == "invalid_utf8":
        raw = text.encode()
        at = raw.index(b'"summary": "') + len(b'"summary": "')
        return raw[:at] + data.draw(st.sampled_from(_INVALID_UTF8)) + raw[at:]
    return text.encode(how)


def deeply_nested(data: st.DataObject, doc: Doc) -> bytes:
    depth = data.draw(st.integers(300, 200_000))
    how = data.draw(st.sampled_from(["arrays", "objects", "inside_event"]))
    if how == "arrays":
        return b"[" * depth + b"]" * depth
    nest = b'{"a":' * depth + b"1" + b"}" * depth
    if how == "objects":
        return nest
    doc = _copy(doc)
    doc["snapshot"]["summary"] = "@@NEST@@"
    return _dump(doc).replace(b'"@@NEST@@"', nest)


def null_bytes(data: st.DataObject, doc: Doc) -> bytes:
    raw = _dump(doc)
    how = data.draw(st.sampled_from(["inside", "prefix", "only", "in_key"]))
    if how == "only":
        return b"\x00" * data.draw(st.integers(1, 64))
    if how == "prefix":
        return b"\x00" + raw
    if how == "in_key":
        return raw.replace(b'"event_type"', b'"event\x00_type"', 1)
    at = data.draw(st.integers(1, len(raw) - 1))
    return raw[:at] + b"\x00" + raw[at:]


def not_an_event(data: st.DataObject, doc: Doc) -> bytes:
    return data.draw(st.sampled_from([b"", b"null", b"[]", b"{}", b"42", b'"dossier"', b"true", b"[{}]"]))


def contract_breach(data: st.DataObject, doc: Doc) -> bytes:
    doc = _copy(doc)
    how = data.draw(st.sampled_from([
        "extra_field", "schema_version", "version_mismatch", "negative_fee", "float_fee", "naive_time",
        "impossible_status", "missing_field", "code_mismatch",
    ]))
    if how == "extra_field":
        doc[data.draw(st.sampled_from(["password", "__proto__", "x", "eventId"]))] = data.draw(_JSON_SCALARS)
    elif how == "schema_version":
        doc["schema_version"] = data.draw(st.integers().filter(lambda v: v != 1))
    elif how == "version_mismatch":
        doc["dossier_version"] = doc["snapshot"]["version"] + data.draw(st.integers(1, 5))
    elif how == "negative_fee":
        doc["snapshot"]["fees"] = [{"code": "P", "name": "Phí", "amount": data.draw(st.integers(max_value=-1))}]
    elif how == "float_fee":
        doc["snapshot"]["fees"] = [{"code": "P", "name": "Phí", "amount": data.draw(st.floats(0.1, 1e6))}]
    elif how == "naive_time":
        doc["occurred_at"] = doc["occurred_at"][:19]
    elif how == "impossible_status":
        doc["snapshot"]["status"] = data.draw(st.sampled_from(["withdrawn", "result_returned", "deleted", ""]))
    elif how == "missing_field":
        del doc[data.draw(st.sampled_from(["event_id", "occurred_at", "dossier_code", "snapshot", "dossier_version"]))]
    else:
        doc["snapshot"]["code"] = doc["snapshot"]["code"][:-1] + ("1" if doc["snapshot"]["code"][-1] != "1" else "2")
    return _dump(doc)


BUILDERS = {
    "bad_json": bad_json,
    "wrong_types": wrong_types,
    "bad_dossier_code": bad_dossier_code,
    "invalid_id": invalid_id,
    "unknown_event_type": unknown_event_type,
    "wrong_encoding": wrong_encoding,
    "deeply_nested": deeply_nested,
    "null_bytes": null_bytes,
    "not_an_event": not_an_event,
    "contract_breach": contract_breach,
}
_NEEDS_RECEIVED = {"invalid_id"}


def is_invalid(raw: bytes) -> bool:
    try:
        decode(raw, MAX_BYTES)
    except InvalidMessage:
        return True
    return False


@dataclass
class Bad:
    kind: str
    key: bytes | None
    value: bytes
    reinforced: bool = False


def draw_bad(cfg: PoisonConfig, valid_codes: set[str]) -> list[Bad]:
    """`cfg.bad` hostile messages, the same ones for the same seed."""
    pool = generate_journeys(200, seed=cfg.bad_seed, start=datetime(2021, 3, 1, 7, 30, tzinfo=VIETNAM_TZ))
    docs = [json.loads(encode(e)) for j in pool for e in j.events]
    received = [d for d in docs if d["event_type"] == "dossier.received"]
    kinds = list(BUILDERS)
    out: list[Bad] = []

    def one(data: st.DataObject, kind: str) -> None:
        # Everything comes from `data` (Hypothesis replays choice sequences and insists on that).
        base = received if kind in _NEEDS_RECEIVED else docs
        doc = base[data.draw(st.integers(0, len(base) - 1))]
        value = (huge if kind == "huge" else BUILDERS[kind])(data, doc)
        reinforced = False
        if not is_invalid(value):  # the draw happened to be a valid event: break it for sure
            reinforced = True
            try:
                parsed = json.loads(value)
                parsed["dossier_version"] = "not-a-number"
                value = _dump(parsed)
            except ValueError:
                value = b"\x00" + value
        assert is_invalid(value)
        key = data.draw(st.one_of(st.none(), st.binary(min_size=1, max_size=24), st.uuids().map(lambda u: u.bytes)))
        if key is not None and key.decode("utf-8", "replace") in valid_codes:
            key = None
        out.append(Bad(kind, key, value, reinforced))

    def batch(count: int, kind_strategy: st.SearchStrategy[str], run_seed: int) -> None:
        @seed(run_seed)
        @settings(
            max_examples=count, database=None, deadline=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def draw(data: st.DataObject) -> None:
            one(data, data.draw(kind_strategy))

        draw()

    # The few huge ones first (their own batch, so their number is fixed), then the rest.
    for target, kind_strategy in ((cfg.huge, st.just("huge")), (cfg.bad, st.sampled_from(kinds))):
        for attempt in range(20):  # Hypothesis may stop a run short of max_examples: go on with another seed
            missing = target - len(out)
            if missing <= 0:
                break
            batch(missing, kind_strategy, cfg.bad_seed * 1000 + target + attempt)
        del out[target:]
    if len(out) < cfg.bad:
        raise RuntimeError(f"drew only {len(out)} of {cfg.bad} bad messages")
    return out


# -- the scenario ------------------------------------------------------------------------------------------


async def run(quick: bool = False, log: Any = print, cfg: PoisonConfig | None = None) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else FULL)
    workdir = Path(tempfile.mkdtemp(prefix="bench-poison-"))
    journeys = journeys_for(cfg.valid_events, cfg.seed)
    valid = interleave(journeys)
    valid_ids = {event_id for _, _, event_id in valid}
    t0 = time.monotonic()
    bad = draw_bad(cfg, {j.dossier_code for j in journeys})
    draw_s = time.monotonic() - t0
    rng = random.Random(cfg.seed)
    slots = set(rng.sample(range(len(valid) + len(bad)), len(bad)))
    items: list[tuple[bytes | None, bytes | None]] = []
    vi = bi = 0
    for i in range(len(valid) + len(bad)):
        if i in slots:
            items.append((bad[bi].key, bad[bi].value))
            bi += 1
        else:
            items.append((valid[vi][0], valid[vi][1]))
            vi += 1
    log(f"poison: {len(valid)} valid events ({len(journeys)} dossiers) + {len(bad)} bad "
        f"(drawn in {draw_s:.1f} s, {sum(b.reinforced for b in bad)} reinforced), workdir {workdir}")

    gw: GatewayProcess | None = None
    async with stack(workdir, cfg.latency_ms) as s:
        sim, bootstrap = s.sim, s.bootstrap
        sampler = ProcSampler()
        try:
            gw = GatewayProcess.configure(workdir, bootstrap, sim)
            sampler.watch("simulator", sim.pid)
            sampler.watch("gateway", gw.start())
            sampler.start()
            if not await gw.ready(60):
                raise RuntimeError(f"gateway not ready in 60 s:\n{gw.log_tail()}")

            dlt = TopicWatcher(bootstrap, DLT_TOPIC)
            await dlt.start()
            started = time.monotonic()
            producer = asyncio.create_task(produce(bootstrap, INPUT_TOPIC, items))
            deadline = Deadline(cfg.deadline_s)
            consumer_drops = 0
            was_ready: dict[str, bool] = {}
            valid_synced_at: float | None = None
            finished_at: float | None = None
            last_check = 0.0
            while not deadline.expired:
                await asyncio.sleep(0.5)
                if not gw.alive():
                    break
                body = await gw.readiness()
                for name, ok in ((body or {}).get("checks") or {}).items():
                    if name.startswith("consumer:"):
                        if was_ready.get(name) and not ok:
                            consumer_drops += 1
                        was_ready[name] = bool(ok)
                now = time.monotonic()
                if valid_synced_at is None and producer.done() and now - last_check >= 2.0:
                    last_check = now
                    stats = await sim.stats()
                    if stats["dossiers"] >= len(journeys) and not count_lost(journeys, await sim.dossiers()):
                        valid_synced_at = now
                if valid_synced_at is not None:
                    if len(dlt.records) >= len(bad):
                        finished_at = now
                        break
                    if dlt.quiet_s >= cfg.stall_s:  # every valid one is through and no dead letter came for a while
                        break
            duration = (finished_at or time.monotonic()) - started
            ends: dict[int, int] = {}
            if producer.done():
                ends = producer.result()
            else:
                producer.cancel()
            await dlt.stop()
            dead = dlt.records
            alive = gw.alive()
            ready_body = await gw.readiness() if alive else None
            results = await read_topic(bootstrap, RESULTS_TOPIC, expect=len(valid), timeout_s=60, idle_s=2.0)
            portal = await sim.dossiers()
            stats = await sim.stats()
            metrics_in_flight = await gw.metric("gateway_in_flight_messages") if alive else None
            exit_code = await gw.stop()
            await sampler.stop()
            # After a graceful stop the group has committed everything it finished: what is left is stuck.
            committed = await committed_offsets(bootstrap, "gateway.national_portal", INPUT_TOPIC)
            uncommitted = {p: end - committed.get(p, 0) for p, end in ends.items() if end > committed.get(p, 0)}

            # Match dead letters to the bad messages by their exact bytes (kept as they were).
            want: Counter[bytes] = Counter(b.value for b in bad)
            reasons: dict[bytes, list[str]] = {}
            classes: Counter[str] = Counter()
            unexpected = 0
            for r in dead:
                value = bytes(r.value) if r.value is not None else b""
                reason = header(r, H_EXC_MESSAGE) or ""
                classes[header(r, H_EXC_CLASS) or "?"] += 1
                if want[value] > 0:
                    want[value] -= 1
                    reasons.setdefault(value, []).append(reason)
                else:
                    unexpected += 1
            per_kind: dict[str, dict[str, Any]] = {}
            dead_lettered = 0
            for b in bad:
                k = per_kind.setdefault(b.kind, {"bad": 0, "dead_lettered": 0, "example_reason": ""})
                k["bad"] += 1
                got = reasons.get(b.value)
                if got:
                    reason = got.pop()
                    if reason.strip():
                        k["dead_lettered"] += 1
                        dead_lettered += 1
                        k["example_reason"] = k["example_reason"] or reason[:160]
            outcomes: Counter[str] = Counter()
            synced_ids: set[str] = set()
            for r in results:
                body = json.loads(r.value)
                outcomes[body["outcome"]] += 1
                if body["outcome"] == "synced" and body["source_event_id"] in valid_ids:
                    synced_ids.add(body["source_event_id"])
            lost = count_lost(journeys, portal)
            return {
                "bad": len(bad),
                "dead_lettered": dead_lettered,
                "valid_events": len(valid),
                "valid_delivered": len(synced_ids),
                "lost": len(lost),
                "consumer_restarts": (gw.starts - 1) + consumer_drops + (0 if alive else 1),
                "duration_s": round(duration, 1),
                "converged": finished_at is not None,
                "process_alive_at_end": alive,
                "readiness_at_end": ready_body,
                "in_flight_at_end": metrics_in_flight,
                "exit_code_after_sigterm": exit_code,
                "time_to_all_valid_synced_s": round(valid_synced_at - started, 1) if valid_synced_at else None,
                "events_per_s": round(len(items) / (valid_synced_at - started), 1) if valid_synced_at else None,
                "produced": sum(ends.values()),
                "uncommitted_after_stop": uncommitted,
                "dlt_records": len(dead),
                "dlt_unexpected": unexpected,
                "dlt_error_classes": dict(classes),
                "reinforced": sum(b.reinforced for b in bad),
                "huge_bytes_max": max((len(b.value) for b in bad if b.kind == "huge"), default=0),
                "result_outcomes": dict(outcomes),
                "duplicate_effects": stats["duplicate_effects"],
                "status_regressions": stats["status_regressions"],
                "portal_rejected": stats["rejected"],
                "handler_bugs_logged": gw.log_count("handler_bug"),
                "by_kind": per_kind,
                **sampler.summary(),
                "gateway_rss_mb_every_10s": [rss for _, rss in sampler.rss_every("gateway", 10.0)],
                "lost_examples": lost[:5],
            }
        finally:
            if gw is not None:
                await gw.stop()
            await sampler.stop()
