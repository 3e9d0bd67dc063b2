"""Checks before calling: a lookup whose ID number, name or date of birth cannot be right never reaches the database.

Pure functions. The reasons name the rule broken, never the value (they go into the reply, the access log and the
ledger). What passes is normalised to what the database expects: the name in Unicode NFC and upper case with
single spaces, the date of birth as `yyyyMMdd` (or `yyyy` when only the year is known).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Final

# Province-of-registration codes of the 12-digit number (Circular 07/2016/TT-BCA and its successors): the 63
# provinces and cities as numbered when the numbers were introduced. Numbers already issued keep their code when
# provinces merge, so the list only grows.
PROVINCE_CODES: Final = frozenset({
    "001", "002", "004", "006", "008", "010", "011", "012", "014", "015", "017", "019", "020", "022", "024", "025",
    "026", "027", "030", "031", "033", "034", "035", "036", "037", "038", "040", "042", "044", "045", "046", "048",
    "049", "051", "052", "054", "056", "058", "060", "062", "064", "066", "067", "068", "070", "072", "074", "075",
    "077", "079", "080", "082", "083", "084", "086", "087", "089", "091", "092", "093", "094", "095", "096",
})
# Digit 4: gender and century of birth (even: male, odd: female); 0/1 the 1900s, 2/3 the 2000s, 4/5 the 2100s...
CENTURY_BY_DIGIT: Final = {d: 1900 + 100 * (d // 2) for d in range(10)}
MAX_NAME_CHARS: Final = 100
_DIGITS_12: Final = re.compile(r"[0-9]{12}")
_ISO: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_COMPACT: Final = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_DMY: Final = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")
_YEAR: Final = re.compile(r"[0-9]{4}")
_NAME_PUNCTUATION: Final = frozenset("'-")


class Invalid(ValueError):
    """A request that cannot be right; `reason` names the rule (never the value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checked:
    """A request's personal fields, checked and in the database's form."""

    id_number: str
    full_name: str
    birth: str
    """yyyyMMdd, or yyyy when only the year is known."""
    birth_year: int


@dataclass(frozen=True, slots=True)
class Birth:
    year: int
    day: date | None


def parse_birth(text: str, *, today: date) -> Birth:
    """A date of birth in an accepted format: yyyy-mm-dd, yyyymmdd, dd/mm/yyyy, or yyyy."""
    value = text.strip()
    year: int
    for pattern, order in ((_ISO, (0, 1, 2)), (_COMPACT, (0, 1, 2)), (_DMY, (2, 1, 0))):
        found = pattern.fullmatch(value)
        if found is not None:
            parts = found.groups()
            y, m, d = (int(parts[i]) for i in order)
            try:
                day = date(y, m, d)
            except ValueError:
                raise Invalid("date_of_birth: not a real calendar day") from None
            if day > today:
                raise Invalid("date_of_birth: in the future")
            if y < 1900:
                raise Invalid("date_of_birth: before 1900")
            return Birth(y, day)
    if _YEAR.fullmatch(value):
        year = int(value)
        if year > today.year:
            raise Invalid("date_of_birth: in the future")
        if year < 1900:
            raise Invalid("date_of_birth: before 1900")
        return Birth(year, None)
    raise Invalid("date_of_birth: use yyyy-mm-dd, yyyymmdd, dd/mm/yyyy or yyyy")


def check_id_number(value: str, birth_year: int) -> str:
    """The 12-digit number, if its structure agrees with itself and with the year of birth."""
    if not (len(value) == 12 and value.isascii() and _DIGITS_12.fullmatch(value)):
        raise Invalid("id_number: must be exactly 12 digits")
    if value[:3] not in PROVINCE_CODES:
        raise Invalid("id_number: unknown province-of-registration code (digits 1-3)")
    century = CENTURY_BY_DIGIT[int(value[3])]
    if century + int(value[4:6]) != birth_year:
        raise Invalid("id_number: the century digit and the birth-year digits (4-6) disagree with date_of_birth")
    return value


def normalise_name(value: str) -> str:
    """Unicode NFC, upper case, single spaces; letters (with their marks), spaces, ' and - only."""
    # Upper-casing can decompose or recompose characters: normalise after it too.
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).upper())
    words = text.split()
    if not words:
        raise Invalid("full_name: empty")
    name = " ".join(words)
    if len(name) > MAX_NAME_CHARS:
        raise Invalid(f"full_name: longer than {MAX_NAME_CHARS} characters")
    for char in name:
        if char == " " or char in _NAME_PUNCTUATION:
            continue
        if not unicodedata.category(char).startswith(("L", "M")):
            raise Invalid("full_name: only letters, spaces, ' and - are allowed")
    if not any(unicodedata.category(c).startswith("L") for c in name):
        raise Invalid("full_name: no letter")
    return name


def check(id_number: str, full_name: str, date_of_birth: str, *, today: date) -> Checked:
    """Every check, in the order a person would fix them; the first broken rule is the reason."""
    birth = parse_birth(date_of_birth, today=today)
    number = check_id_number(id_number, birth.year)
    name = normalise_name(full_name)
    wire = birth.day.strftime("%Y%m%d") if birth.day is not None else f"{birth.year:04d}"
    return Checked(number, name, wire, birth.year)
