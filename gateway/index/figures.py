"""The province's service-index figures for a period, from what the gateway knows of each dossier.

TRANSCRIBED, NOT OFFICIAL: the rules below were transcribed from a description of the national service index's
formulas (Decision 766/QĐ-TTg) and its public dashboard's data, not from an official specification; the points
are a projection. Figures marked `ours` are the gateway's own, stricter measures, not the index's.

The index reads the portal's copy, so every figure but the sync share counts synced dossiers only, as the gateway
last saw them. Periods are [start, end) on the date of receipt (NgayTiepNhan), as the index's own statistics are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from gateway.store.service_index import IndexRow

NOTE: Final = (
    "Formulas transcribed from a description of the national service index (Decision 766/QĐ-TTg) and its public "
    "dashboard, unverified: these are projections, not official figures."
)
INDEX: Final = "index"
OURS: Final = "ours"
DEFAULT_TARGET_DELAY_S: Final = 15 * 60  # ours: every status change at the portal within 15 minutes


@dataclass(frozen=True, slots=True)
class Figure:
    """One indicator: numerator ÷ denominator, and the points it would project to (None: not an index score)."""

    key: str
    title: str
    source: str  # INDEX (transcribed rule) or OURS
    numerator: int
    denominator: int
    share: float | None  # None when the denominator is 0 (the index shows 0 or N/A)
    max_points: float | None
    points: float | None
    rule: str


@dataclass(frozen=True, slots=True)
class IndexReport:
    """Every figure for one period and one agency (None: the whole province)."""

    start: datetime
    end: datetime
    agency: str | None
    dossiers: int
    figures: tuple[Figure, ...]
    note: str = NOTE

    @property
    def projected_points(self) -> float:
        return round(sum(f.points or 0.0 for f in self.figures), 2)

    @property
    def max_points(self) -> float:
        return round(sum(f.max_points or 0.0 for f in self.figures), 2)

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "note": self.note, "formulas": "transcribed, not official",
            "period": {"from": self.start.isoformat(), "to": self.end.isoformat()},
            "agency": self.agency, "dossiers": self.dossiers,
            "projected_points": self.projected_points, "max_points": self.max_points,
            "figures": [asdict(f) for f in self.figures],
        }


def _figure(
    key: str, title: str, source: str, num: int, den: int, rule: str,
    max_points: float | None = None, full_at: float = 1.0,
) -> Figure:
    share = None if den == 0 else num / den
    points = None
    if max_points is not None:
        # "Reaching X % earns the maximum; below, share × maximum / X %" (the index's notes for several figures).
        points = 0.0 if share is None else round(max_points * min(1.0, share / full_at), 2)
    return Figure(key, title, source, num, den, None if share is None else round(share, 6), max_points, points, rule)


def on_time(row: IndexRow, period_end: datetime) -> bool:
    """The index's rule: the end of handling, less the time the applicant took to supplement, is not after the
    appointment set at receipt; a dossier asked to supplement more than once is late. The end of handling is when it
    finished, else when the supplement was requested (still waiting for it), else the period's end."""
    if row.supplement_requests > 1:
        return False
    end = row.finished_at
    if end is None:
        end = row.supplement_requested_at if row.status == "supplement_requested" else period_end
    assert end is not None
    if row.supplement_requested_at is not None and row.supplement_completed_at is not None:
        end = end - (row.supplement_completed_at - row.supplement_requested_at)
    return end <= row.appointment_at


def _count(rows: Sequence[IndexRow], test: Callable[[IndexRow], bool]) -> int:
    return sum(1 for r in rows if test(r))


def compute(
    rows: Sequence[IndexRow], start: datetime, end: datetime, *, agency: str | None = None,
    target_delay_s: int = DEFAULT_TARGET_DELAY_S,
) -> IndexReport:
    """The figures of dossiers received in [start, end) (of `agency`, or all)."""
    received = [r for r in rows if start <= r.received_at < end and (agency is None or r.agency_code == agency)]
    synced = [r for r in received if r.synced_version > 0]
    handled = [r for r in synced if r.status != "not_accepted"]  # only dossiers actually received are handled
    with_fees = [r for r in synced if r.fees_total > 0]
    online = [r for r in synced if r.channel == "online"]
    docs = sum(r.documents for r in synced)
    n, s = len(received), len(synced)
    digitisation = 22 / 4  # the digitisation group's 22 points, split evenly over our four figures (our projection)
    figures = (
        _figure("synced", "Share of dossiers synchronised to the national portal (1.4)", INDEX, s, max(n, s),
                "synced dossiers received in the period ÷ the larger of the one-stop system's and the portal's counts",
                max_points=6),
        _figure("synced_within_target", f"Share with every status change at the portal within {target_delay_s} s",
                OURS,
                _count(received, lambda r: r.synced_version >= r.version and r.max_sync_delay_s is not None
                       and r.max_sync_delay_s <= target_delay_s), n,
                "dossiers whose every version seen was synced, none later than the target after it happened"),
        _figure("on_time", "On-time resolution (2.1)", INDEX, _count(handled, lambda r: on_time(r, end)),
                len(handled),
                "end of handling − supplement waiting time ≤ appointment set at receipt; a second supplement request "
                "is late; unfinished: the period's end", max_points=20),
        _figure("online_submission", "Online submission (3.3)", INDEX, len(online), n,
                "KenhThucHien = 2 among dossiers received (× the sync share, as the index does); full points at 50 %",
                max_points=12, full_at=0.5),
        _figure("online_payment", "Online payment (3.6)", INDEX, _count(with_fees, lambda r: r.paid_online > 0),
                len(with_fees), "DuocThanhToanTrucTuyen 1 or 2 among synced dossiers with a fee above 0",
                max_points=10),
        _figure("digitised", "Dossiers with a digitised component (4.2)", INDEX,
                _count(synced, lambda r: r.documents_digitised > 0), s,
                "HoSoCoThanhPhanSoHoa = 1 (a document with DuocSoHoa = 1); full points at 80 %",
                max_points=digitisation, full_at=0.8),
        _figure("reused", "Dossiers reusing digitised data (4.3)", INDEX,
                _count(synced, lambda r: r.documents_reused > 0), s,
                "a document with DuocTaiSuDung = 1; full points at 80 %", max_points=digitisation, full_at=0.8),
        _figure("from_catalogue", "Dossiers using the applicant's national store (4.4)", INDEX,
                _count(synced, lambda r: r.documents_from_catalogue > 0), s,
                "a document with DuocLayTuKhoDMQG = 1", max_points=digitisation),
        _figure("vneid", "Online dossiers from VNeID-authenticated accounts", INDEX,
                _count(online, lambda r: r.vneid_verified > 0), len(online),
                "TaiKhoanDuocXacThucVoiVNeID = 1 among online dossiers", max_points=digitisation),
        _figure("documents_digitised", "Submitted documents digitised", OURS,
                sum(r.documents_digitised for r in synced), docs, "documents with DuocSoHoa = 1 ÷ documents"),
    )
    return IndexReport(start, end, agency, n, figures)


def agencies(rows: Sequence[IndexRow]) -> list[str]:
    """The agencies the rows name, sorted."""
    return sorted({r.agency_code for r in rows})
