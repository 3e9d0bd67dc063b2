"""The tax part of `gateway demo`: the tax office simulator, a throw-away land-office key, the commands the load
generator sends (gateway.loadgen.tax: land dossiers at their financial-obligation step), and a count of what
became of them (answers, notices, payments, deadlines) read back from the tax events topic.

The land office's key and certificate are generated at every start into a temporary directory (removed at the
end): the simulator verifies each form's signature against that certificate, the gateway signs with that key and
trusts the simulator's own (also fresh) tax-office certificate. No key is ever stored in the repository.

The simulator issues a dossier's notice `notice_delay_s` after the submission and marks it paid
`payment_delay_s` after that; one dossier (the first sent) stays silent, so its follow-up ends in
`tax.no_notice_by_deadline` after the demo's short `notice_deadline_s`. The follow-ups poll at the tax office's
rhythm shrunk to seconds (`RHYTHM`).

`lost` is judged from outside, like the portal's and the post's: a command the topic never answered, or a dossier
whose notice (or payment) the simulator has and whose `tax.notice_issued` (or `tax.obligation_fulfilled`) the
topic does not carry. `second_submissions` counts forms applied twice at the simulator: it must be 0.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from adapters.tax.settings import TaxSettings
from adapters.tax.simulator import Identity, TaxSimulator, generate_identity
from contracts.tax import EVENT_TYPES, DetermineObligations
from gateway.demo.watch import EventsWatcher
from gateway.loadgen.tax import LAND_OFFICE_CODE, encode_command
from gateway.settings import FollowUpSettings

PARTNER: Final = "tax"
USERNAME: Final = "gateway"
PASSWORD: Final = "secret"  # noqa: S105 - the simulator's well-known demo credential
LATENCY_S: Final = 0.02
ERROR_RATE: Final = 0.01  # SOAP Server fault before any effect: retries that must not submit a form twice
OUTCOMES: Final = ("done", "rejected", "dead_lettered")
ENDINGS: Final = ("tax.obligation_fulfilled", "tax.no_notice_by_deadline", "tax.no_payment_by_deadline",
                  "tax.follow_up_failed")


@dataclass(frozen=True)
class Rhythm:
    """The tax office's pace and the gateway's follow-up schedule, shrunk from days to seconds.

    The first poll comes just after the notice is due, and the first voucher poll (one `poll_interval_s` after
    the notice) just after the payment is: one poll of each per dossier, so the 2,000-dossier demo adds few
    calls. The notice deadline leaves room for a burst of submissions; it is also how long the silent dossier
    waits for its `tax.no_notice_by_deadline`.
    """

    notice_delay_s: float = 1.0
    payment_delay_s: float = 0.8
    first_poll_after_s: float = 1.2
    poll_interval_s: float = 1.0
    # Room for a loaded machine (a busy CI runner): a notice the office issues after the deadline is "lost".
    notice_deadline_s: float = 30.0
    payment_deadline_s: float = 45.0


RHYTHM = Rhythm()
# Follow-ups of the demo: looked for five times a second, a few more at once than in production, and, when a
# run fails on our side, tried again within seconds (production: every second, 8 at once, 30 s backoff).
FOLLOW_UPS: Final = FollowUpSettings(
    scan_interval_s=0.2, concurrency=64, batch=64, claim_s=15.0, backoff_initial_s=0.5, backoff_max_s=2.0
)
SILENT_DOSSIERS: Final = 1


@dataclass
class TaxReport:
    """The tax figures of a demo run; `lost` must be 0 and `second_submissions` 0."""

    commands_sent: int = 0
    commands_by_kind: dict[str, int] = field(default_factory=dict)
    commands_in: int = 0
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    unanswered: int = 0
    retried: int = 0
    submissions: int = 0
    repeats: int = 0
    second_submissions: int = 0
    notices_issued: int = 0
    notices_paid: int = 0
    silent_dossiers: int = 0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    events_raw: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    obligations_fulfilled: int = 0
    deadline_events: int = 0
    follow_up_failures: int = 0
    follow_ups_open: int = 0
    pending_at_simulator: int = 0
    notices_missing: int = 0
    payments_missing: int = 0
    lost: int = 0
    converged: bool = False
    lost_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Keys:
    """Where the throw-away land-office identity and the simulator's tax-office certificate were written."""

    signing_key: Path
    signing_cert: Path
    tax_office_cert: Path


def _tax_office() -> Identity:
    """The simulated tax office's identity (the simulator parses its key once, then signs in ~2 ms)."""
    return generate_identity("Simulated tax office (demo)")


def simulator(directory: Path, seed: int) -> tuple[TaxSimulator, Keys]:
    """The tax office on loopback, and a land-office key made now (PEM files in `directory`, which the caller
    removes): notices and payments come by themselves, a few Server faults, a little latency."""
    land_office = generate_identity("Văn phòng Đăng ký đất đai (demo, throw-away)")
    sim = TaxSimulator(
        land_office_cert=land_office.cert_pem, tax_office=_tax_office(), username=USERNAME, password=PASSWORD,
        seed=seed,
        latency_s=LATENCY_S, error_rate=ERROR_RATE,
        notice_delay_s=RHYTHM.notice_delay_s, payment_delay_s=RHYTHM.payment_delay_s,
    )
    keys = Keys(directory / "land-office.key.pem", directory / "land-office.cert.pem",
                directory / "tax-office.cert.pem")
    keys.signing_key.touch(mode=0o600)
    keys.signing_key.write_bytes(land_office.key_pem)
    keys.signing_cert.write_bytes(land_office.cert_pem)
    keys.tax_office_cert.write_bytes(sim.tax_office_cert_pem)
    return sim, keys


def settings(sim: TaxSimulator, keys: Keys) -> TaxSettings:
    """The tax adapter's settings for the simulator (started), at the demo's rhythm."""
    return TaxSettings(
        base_url=sim.endpoint_url, username=USERNAME, password=PASSWORD,
        signing_key_path=keys.signing_key, signing_cert_path=keys.signing_cert,
        tax_office_cert_path=keys.tax_office_cert, office_code=LAND_OFFICE_CODE, timeout_s=5.0,
        first_poll_after_s=RHYTHM.first_poll_after_s, poll_interval_s=RHYTHM.poll_interval_s,
        poll_backoff_factor=1.0, poll_interval_max_s=RHYTHM.poll_interval_s,
        notice_deadline_s=RHYTHM.notice_deadline_s, payment_deadline_s=RHYTHM.payment_deadline_s,
    )


def silent_dossiers(commands: list[DetermineObligations], seed: int) -> set[str]:
    """Dossiers the tax office never answers by itself: the first one sent (its deadline then passes early in
    the run, while the others go on), plus seeded others if SILENT_DOSSIERS asks for more. None when there is
    one command only, so that even the smallest run shows a notice and a payment."""
    codes = [c.dossier_code for c in commands]
    if len(codes) < 2:
        return set()
    rest = codes[1:]
    return {codes[0], *random.Random(seed).sample(rest, min(len(rest) - 1, SILENT_DOSSIERS - 1))}


def schedule(
    items: list[tuple[str, bytes, bytes, str]], commands: list[DetermineObligations], commands_topic: str
) -> list[tuple[str, bytes, bytes, str]]:
    """`items` (topic, key, value, event id) with each tax command right after the event that caused it."""
    after: dict[str, list[DetermineObligations]] = {}
    for command in commands:
        after.setdefault(str(command.causation_id), []).append(command)
    out: list[tuple[str, bytes, bytes, str]] = []
    for item in items:
        out.append(item)
        for command in after.get(item[3], ()):
            out.append((commands_topic, command.dossier_code.encode(), encode_command(command), str(command.event_id)))
    return out


class TaxWatcher(EventsWatcher):
    """Reads the tax events topic: answers by command, events de-duplicated by id, and each dossier's notices,
    payments and endings."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, "tax")
        self.notices: dict[str, set[str]] = {}  # dossier → notice ids reported issued
        self.fulfilled: set[str] = set()  # notice ids reported paid
        self.notice_ended: set[str] = set()  # dossiers whose wait for a notice ended without one
        self.payment_ended: set[str] = set()  # notice ids whose wait for the payment ended (paid or not)

    def on_event(self, kind: str, body: dict[str, Any]) -> None:
        code = body["dossier_code"]
        if kind == "tax.notice_issued":
            self.notices.setdefault(code, set()).add(body["notice_id"])
        elif kind == "tax.obligation_fulfilled":
            self.fulfilled.add(body["notice_id"])
            self.payment_ended.add(body["notice_id"])
        elif kind == "tax.no_payment_by_deadline":
            self.payment_ended.add(body["notice_id"])
        elif kind == "tax.no_notice_by_deadline":
            self.notice_ended.add(code)
        elif kind == "tax.follow_up_failed":
            if body["stage"] == "notice":
                self.notice_ended.add(code)
            else:
                self.payment_ended.add(body["reference"])

    def ended(self, code: str) -> bool:
        """Whether the dossier's follow-ups are over: no notice by the deadline (or a failure), or every notice
        reported paid, unpaid by the deadline, or failed."""
        if code in self.notice_ended:
            return True
        notices = self.notices.get(code, set())
        return bool(notices) and all(n in self.payment_ended for n in notices)


def open_follow_ups(commands: list[DetermineObligations], watcher: TaxWatcher) -> list[str]:
    """Dossiers whose command was done (a submission, so a follow-up) and whose follow-ups have not ended."""
    return [
        c.dossier_code for c in commands
        if watcher.answers.get(str(c.event_id)) == "done" and not watcher.ended(c.dossier_code)
    ]


def missing(sim: TaxSimulator, watcher: TaxWatcher) -> tuple[list[str], list[str]]:
    """Dossiers with a notice at the simulator that the topic does not report, and dossiers with a paid notice
    whose fulfilment the topic does not report (the simulator first issues and pays what has come due)."""
    notices, payments = [], []
    for code, record in sim.dossiers.items():
        sim.notices(code)  # what is due now: the tax office issues and records payments on its own
        reported = watcher.notices.get(code, set())
        if any(n.notice_id not in reported for n in record.notices):
            notices.append(code)
        if any(n.paid_at is not None and n.notice_id not in watcher.fulfilled for n in record.notices):
            payments.append(code)
    return notices, payments


def pending(sim: TaxSimulator) -> list[str]:
    """Dossiers whose story at the simulator is not over: submitted, not silent, and not yet issued a notice or
    not yet paid (it issues and records payments after its delays). Until it is, a follow-up that has already
    given up could still miss a notice: the run is not settled."""
    return [
        code for code, record in sim.dossiers.items()
        if code not in sim.silent_dossiers
        and (not sim.notices(code) or any(n.paid_at is None for n in record.notices))
    ]


def settled(commands: list[DetermineObligations], sim: TaxSimulator, watcher: TaxWatcher) -> bool:
    """Every command answered, every dossier's follow-ups over and its story at the simulator too, and nothing
    the simulator has is missing from the topic."""
    if watcher.unanswered(commands) or open_follow_ups(commands, watcher) or pending(sim):
        return False
    notices, payments = missing(sim, watcher)
    return not notices and not payments


def progress(commands: list[DetermineObligations], sim: TaxSimulator, watcher: TaxWatcher) -> tuple[int, str]:
    """Commands whose story is over (answered, and followed up to the end when done), and a line of figures."""
    over = len(commands) - len(watcher.unanswered(commands)) - len(open_follow_ups(commands, watcher))
    info = (
        f"answered {len(watcher.answers)}  submitted {len(sim.applied)}  "
        f"notices {sum(map(len, watcher.notices.values()))}  fulfilled {len(watcher.fulfilled)}  "
        f"no notice {len(watcher.notice_ended)}"
    )
    return over, info


def report(commands: list[DetermineObligations], sim: TaxSimulator, watcher: TaxWatcher) -> TaxReport:
    """The tax figures now."""
    out = TaxReport(commands_sent=len(commands))
    out.commands_by_kind = dict(Counter(c.transaction.kind.value for c in commands))
    for outcome in watcher.answers.values():
        out.answered[outcome] = out.answered.get(outcome, 0) + 1
    missing_answers = watcher.unanswered(commands)
    missing_notices, missing_payments = missing(sim, watcher)
    out.unanswered = len(missing_answers)
    out.submissions = len(sim.applied)
    out.repeats = sum(sim.repeats.values())
    # A dossier applied again under another request id, or one request id applied twice.
    out.second_submissions = sim.duplicate_submissions + len(sim.applied) - len(set(sim.applied))
    out.notices_issued = sum(len(d.notices) for d in sim.dossiers.values())
    out.notices_paid = sum(n.paid_at is not None for d in sim.dossiers.values() for n in d.notices)
    out.silent_dossiers = len(sim.silent_dossiers)
    unique = Counter(watcher.events.values())
    out.events.update(unique)
    out.events_raw.update(watcher.raw)
    out.obligations_fulfilled = unique["tax.obligation_fulfilled"]
    out.deadline_events = unique["tax.no_notice_by_deadline"] + unique["tax.no_payment_by_deadline"]
    out.follow_up_failures = unique["tax.follow_up_failed"]
    out.follow_ups_open = len(open_follow_ups(commands, watcher))
    out.pending_at_simulator = len(pending(sim))
    out.notices_missing = len(missing_notices)
    out.payments_missing = len(missing_payments)
    lost = sorted(set(missing_notices) | set(missing_payments))
    out.lost = out.unanswered + len(lost)
    out.lost_examples = (missing_answers + lost)[:10]
    out.converged = out.lost == 0 and out.follow_ups_open == 0 and out.pending_at_simulator == 0
    return out


def print_report(console: Console, tax: TaxReport) -> None:
    """The tax part of the demo's summary."""
    table = Table(title="Demo summary: land office → gateway → tax office", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    ok = "[green]" if tax.lost == 0 and tax.converged else "[red]"
    once = "[green]" if tax.second_submissions == 0 else "[red]"
    by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(tax.commands_by_kind.items()))
    answered = tax.answered
    events = tax.events
    rows: list[tuple[str, object, str]] = [
        ("commands sent", tax.commands_sent, f"determine_obligations: {by_kind or 'none'}"),
        ("records in", tax.commands_in, "records the tax adapter consumed: its commands and the payment events "
         "it reacts to (redeliveries count again)"),
        ("answered", sum(answered.values()),
         f"done {answered.get('done', 0)}, rejected {answered.get('rejected', 0)}, "
         f"dead-lettered {answered.get('dead_lettered', 0)}"),
        ("retried", tax.retried, "in-process retries after a retryable failure"),
        ("submissions", tax.submissions, f"signed forms applied at the simulator (repeats answered: {tax.repeats})"),
        ("second submissions", f"{once}{tax.second_submissions}", "a dossier's form applied twice at the simulator"),
        ("notices issued", f"{events['tax.notice_issued']} / {tax.notices_issued}",
         "tax.notice_issued events / notices at the simulator"),
        ("obligations fulfilled", f"{tax.obligations_fulfilled} / {tax.notices_paid}",
         "tax.obligation_fulfilled events / notices paid at the simulator"),
        ("deadline events", tax.deadline_events,
         f"no notice {events['tax.no_notice_by_deadline']} (silent dossiers {tax.silent_dossiers}), "
         f"no payment {events['tax.no_payment_by_deadline']}"),
        ("follow-up failures", tax.follow_up_failures, "tax.follow_up_failed: refused, bad signature, unreadable"),
        ("follow-ups open", tax.follow_ups_open, "dossiers the gateway still follows up (notice or payment)"),
        ("pending at simulator", tax.pending_at_simulator, "dossiers the simulator has not yet issued or paid"),
        ("events", f"{sum(events.values())} ({sum(tax.events_raw.values())})",
         "on the topic, de-duplicated by event_id (raw: repeats included)"),
        ("lost", f"{ok}{tax.lost}",
         f"unanswered commands {tax.unanswered} + dossiers whose notice ({tax.notices_missing}) or payment "
         f"({tax.payments_missing}) the simulator has and the topic does not"),
    ]
    for name, value, meaning in rows:
        table.add_row(name, str(value), meaning)
    console.print(table)


__all__ = [
    "FOLLOW_UPS", "RHYTHM", "Keys", "Rhythm", "TaxReport", "TaxWatcher", "missing", "open_follow_ups", "pending",
    "print_report", "progress", "report", "schedule", "settings", "settled", "silent_dossiers", "simulator",
]
