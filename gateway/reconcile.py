"""Reconciliation: a partner's statement of a day against what the gateway recorded, line by line (pure).

Lines are matched by the partner's reference (a transaction id). Each is matched (same amount), missing on our
side (in the statement, not recorded), missing on theirs (recorded, not in the statement), or an amount
mismatch. Reading the statement and the records is the adapter's (its field names); comparing is here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

KINDS: Final = ("matched", "missing_ours", "missing_theirs", "amount_mismatch")


@dataclass(frozen=True, slots=True)
class Line:
    """One transaction as one side states it."""

    reference: str
    amount: int
    dossier_code: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    """One reference's verdict."""

    kind: str  # one of KINDS
    reference: str
    dossier_code: str
    theirs: int | None
    ours: int | None


@dataclass(frozen=True, slots=True)
class Report:
    rows: tuple[Row, ...] = field(default=())

    def of(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    @property
    def mismatches(self) -> int:
        return len(self.rows) - self.count("matched")

    def totals(self) -> tuple[int, int]:
        """(the statement's total, our total)."""
        return (sum(r.theirs or 0 for r in self.rows), sum(r.ours or 0 for r in self.rows))

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]


def _unique(lines: Iterable[Line], side: str) -> dict[str, Line]:
    out: dict[str, Line] = {}
    for line in lines:
        if line.reference in out:
            raise ValueError(f"{side}: reference {line.reference} appears twice")
        out[line.reference] = line
    return out


def compare(theirs: Iterable[Line], ours: Iterable[Line]) -> Report:
    """Every reference of either side, with its verdict, sorted by kind then reference."""
    t, o = _unique(theirs, "statement"), _unique(ours, "records")
    rows = []
    for ref in sorted(set(t) | set(o)):
        a, b = t.get(ref), o.get(ref)
        code = (a.dossier_code if a is not None else "") or (b.dossier_code if b is not None else "")
        if a is None:
            kind = "missing_theirs"
        elif b is None:
            kind = "missing_ours"
        else:
            kind = "matched" if a.amount == b.amount else "amount_mismatch"
        rows.append(Row(kind, ref, code, a.amount if a else None, b.amount if b else None))
    rows.sort(key=lambda r: (KINDS.index(r.kind), r.reference))
    return Report(tuple(rows))
