"""Validators for the domain's identifiers and values: dossier codes, personal ID numbers, instants, ids, VND.

One truth for the contract: every rule JSON Schema can state is a regular expression or a bound here, used by
the gateway *and* published verbatim in the schema (contracts/export.py). Patterns use only syntax that reads
the same in ECMA-262 (what JSON Schema specifies), Python's `re` (matched whole, with fullmatch) and Rust's
`regex` (pydantic's `pattern`): ASCII classes, non-capturing groups, no look-around. JSON values are taken
as JSON says, not coerced: no "1" for an integer, no Unix-number timestamp, no UUID without hyphens. The few
rules a schema cannot state are checked after the pattern and listed in `NOT_EXPRESSIBLE` (and in
docs/partners.md), each with an example.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

MAX_VND = 10**13  # 10,000 billion VND: far above any administrative fee or land levy.
# Every integer the gateway stores must fit its column on SQLite and PostgreSQL alike (BIGINT / INTEGER):
# one that does not is refused here, as invalid input, instead of failing inside the store.
MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1
# An integer written with a fraction or an exponent (100.0, 1e2) is a double to every JSON parser: exact only
# below 2**53. From there on "9007199254740993.0" reads as ...992 (2**53), so such a number is refused.
MAX_EXACT_FLOAT_INT = 2**53 - 1


def _calendar(year: str, leap_year: str, sep: str) -> str:
    """A Gregorian date as a pattern: `year` for any year, `leap_year` for those that have a 29 February."""
    days31 = rf"(?:0[13578]|1[02]){sep}(?:0[1-9]|[12][0-9]|3[01])"
    days30 = rf"(?:0[469]|11){sep}(?:0[1-9]|[12][0-9]|30)"
    february = rf"02{sep}(?:0[1-9]|1[0-9]|2[0-8])"
    return rf"(?:{year}{sep}(?:{days31}|{days30}|{february})|{leap_year}{sep}02{sep}29)"


# Circular 01/2018/TT-VPCP art. 19: <agency electronic id>-<YYMMDD>-<NNNN>, e.g. 000.00.01.H34-191215-0007.
# YYMMDD is the receipt date, a real day of 2000-2099 (29 February only in years divisible by 4).
DOSSIER_CODE_PATTERN: Final = (
    r"^[0-9A-Z]{3}\.[0-9A-Z]{2}\.[0-9A-Z]{2}\.[A-Z][0-9]{2}-"
    + _calendar(r"[0-9]{2}", r"(?:[02468][048]|[13579][26])", "")
    + r"-[0-9]{4}$"
)
_DOSSIER_CODE_RE = re.compile(DOSSIER_CODE_PATTERN)

# The 12-digit personal ID number: province of registration 001..096 (a range rather than the list, which
# changes when provinces merge), then a gender/century digit (0/1: 1900s, 2/3: 2000s; 4..9 are the 2100s and
# later, not born yet), the year of birth within the century, six more digits. No check digit.
PERSONAL_ID_PATTERN: Final = r"^(?:00[1-9]|0[1-8][0-9]|09[0-6])[0-3][0-9]{8}$"
_PERSONAL_ID_RE = re.compile(PERSONAL_ID_PATTERN)
_CENTURY_BY_DIGIT = {0: 1900, 1: 1900, 2: 2000, 3: 2000, 4: 2100, 5: 2100, 6: 2200, 7: 2200, 8: 2300, 9: 2300}

# RFC 3339 date-time with its offset, as JSON Schema's "date-time": a real Gregorian date, seconds 00-59 (no
# leap second: no clock of the gateway holds one), any fraction (read to the microsecond), Z or +hh:mm/-hh:mm,
# `T`/`Z` in either case. Years 1000-9998 only, so that every instant keeps a four-digit year in every time zone
# (the portal's local yyyyMMddHHmmss, any conversion to UTC) instead of overflowing.
_YEAR = r"(?:[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_LEAP_YEAR = r"(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:1[26]|[2468][048]|[3579][26])00)"
INSTANT_PATTERN: Final = (
    "^"
    + _calendar(_YEAR, _LEAP_YEAR, "-")
    + r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_INSTANT_RE = re.compile(INSTANT_PATTERN)

# RFC 4122 / 9562 text form, as JSON Schema's "uuid": 8-4-4-4-12 hex digits with hyphens, either case.
UUID_PATTERN: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID_RE = re.compile(UUID_PATTERN)

# White space as Unicode's White_Space property, spelled out: `\s` means three different sets in ECMA-262,
# Python and Rust.
_WS = r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_PATTERN: Final = rf"^[^@{_WS}]+@[^@{_WS}]+$"

# The rules the published JSON Schema cannot state: name → (rule, an example the schema accepts and the
# gateway refuses). docs/partners.md lists the same rules; tests/unit/test_contract_schema_truth.py checks both.
NOT_EXPRESSIBLE: Final[dict[str, tuple[str, str]]] = {
    "snapshot-code": (
        "snapshot.code equals dossier_code",
        '"dossier_code": "000.00.01.H34-191215-0007" with "snapshot": {"code": "000.00.01.H34-191215-0008", ...}',
    ),
    "snapshot-version": (
        "snapshot.version equals dossier_version",
        '"dossier_version": 3 with "snapshot": {"version": 2, ...}',
    ),
    "birth-year": (
        "the birth year in a personal ID number (digit 4: 0/1 → 19xx, 2/3 → 20xx; digits 5-6: the year) is not "
        "after the current year",
        '"id_number": "001299001234" (born 2099)',
    ),
    "exact-integer": (
        "an integer written with a fraction or an exponent (100.0, 1e2) is below 2^53 = 9007199254740992, "
        "from where a JSON parser no longer reads it exactly; plain integers (no .0) go up to each maximum",
        '"dossier_version": 9007199254740993.0',
    ),
}


def check_dossier_code(value: str) -> str:
    """Return the code if it is `<agency>-<YYMMDD>-<NNNN>` with a real receipt date."""
    if not _DOSSIER_CODE_RE.fullmatch(value):
        raise ValueError("dossier code must look like 000.00.01.H34-191215-0007, with a real receipt date")
    yymmdd = value.rsplit("-", 2)[1]
    try:  # the pattern already says so; a second opinion from the calendar costs nothing
        date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))
    except ValueError:
        raise ValueError("dossier code carries an impossible receipt date") from None
    return value


def birth_year_of(personal_id: str) -> int:
    """Birth year encoded in digits 4–6 of a personal ID number."""
    return _CENTURY_BY_DIGIT[int(personal_id[3])] + int(personal_id[4:6])


def check_personal_id(value: str) -> str:
    """Return the 12-digit personal ID number if its structure is plausible (there is no check digit)."""
    if not _PERSONAL_ID_RE.fullmatch(value):
        if len(value) != 12 or not value.isascii() or not value.isdigit():
            raise ValueError("personal ID number must be exactly 12 digits")
        if not 1 <= int(value[0:3]) <= 96:
            raise ValueError("personal ID number has an unknown province-of-registration code")
        raise ValueError("personal ID number has a century digit other than 0-3 (born after 2099)")
    if birth_year_of(value) > date.today().year:  # the one rule the schema cannot state: today's year
        raise ValueError("personal ID number encodes a birth year in the future")
    return value


def json_integer(value: Any) -> Any:
    """An integer as JSON Schema's "integer": 100, or 100.0 / 1e2 below 2**53; never "100", true or 100.5."""
    if isinstance(value, bool):
        raise ValueError("must be a JSON integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError("must be an integer, without a fractional part")
        if abs(value) > MAX_EXACT_FLOAT_INT:
            raise ValueError("an integer written with a fraction or an exponent must be below 2^53")
        return int(value)
    raise ValueError("must be a JSON integer, not a string or another type")


def check_instant_text(value: Any) -> Any:
    """An RFC 3339 date-time with its offset (INSTANT_PATTERN); pydantic then reads it (to the microsecond).

    Checked here first because pydantic alone also takes Unix numbers, a space for `T`, `+0700`, no seconds.
    A datetime built in Python (tests, load generator) passes through: AwareDatetime checks its zone.
    """
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _INSTANT_RE.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, e.g. 2019-12-15T08:30:00+07:00 (year 1000-9998)"
        )
    return value


def check_uuid_text(value: Any) -> Any:
    """A UUID in its hyphenated text form; a UUID object passes through."""
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise ValueError("must be a UUID written 8-4-4-4-12 with hyphens")
    return value


def schema_version_1(value: Any) -> Any:
    """The contract's major version: the number 1 (1.0 is the same JSON number; true is not)."""
    return json_integer(value)


# Integers: the bounds go *before* BeforeValidator(json_integer), or pydantic cannot publish them as
# minimum/maximum. Bounded like every integer the store writes (BIGINT / INTEGER).
Version = Annotated[int, Field(ge=1, le=MAX_INT64), BeforeValidator(json_integer)]
Count = Annotated[int, Field(ge=0, le=MAX_INT32), BeforeValidator(json_integer)]
# The pattern is published as is and checked by the AfterValidator (a full match, same regular expression),
# whose reason reads better than pydantic's "should match pattern '<the whole pattern>'".
DossierCode = Annotated[
    str,
    Field(
        min_length=25, max_length=25, examples=["000.00.01.H34-191215-0007"],
        json_schema_extra={"pattern": DOSSIER_CODE_PATTERN},
    ),
    AfterValidator(check_dossier_code),
]
PersonalId = Annotated[
    str,
    Field(
        min_length=12, max_length=12, json_schema_extra={"pattern": PERSONAL_ID_PATTERN},
        description="12-digit personal identification number: province of registration 001-096, a gender/"
        "century digit 0-3, two digits of the birth year, six more. Not expressible here: the birth year "
        "(digit 4: 0/1 → 19xx, 2/3 → 20xx, with digits 5-6) is not after the current year, so 001299001234 "
        "(born 2099) is refused.",
    ),
    AfterValidator(check_personal_id),
]
# Money is whole đồng: 150000 (or 150000.0, the same JSON number), never 1.5 or "150000".
Vnd = Annotated[
    int, Field(ge=0, le=MAX_VND, description="amount in VND (integer đồng)"), BeforeValidator(json_integer)
]
# Every instant carries its offset; the portal's local time (Asia/Ho_Chi_Minh) is derived in mappings.
Instant = Annotated[
    AwareDatetime,
    BeforeValidator(check_instant_text),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN,
         "description": "RFC 3339 date-time with an offset (Z or ±hh:mm), years 1000-9998, e.g. "
         "2019-12-15T08:30:00+07:00; no Unix numbers, no leap second"}
    ),
]
Uuid = Annotated[
    UUID,
    BeforeValidator(check_uuid_text),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]
SchemaVersion = Annotated[Literal[1], BeforeValidator(schema_version_1)]
ShortText = Annotated[str, Field(min_length=1, max_length=500)]
LongText = Annotated[str, Field(min_length=1, max_length=4000)]

__all__ = [
    "DOSSIER_CODE_PATTERN", "EMAIL_PATTERN", "INSTANT_PATTERN", "MAX_EXACT_FLOAT_INT", "MAX_INT32", "MAX_INT64",
    "MAX_VND", "NOT_EXPRESSIBLE", "PERSONAL_ID_PATTERN", "UUID_PATTERN", "Count", "DossierCode", "Instant",
    "LongText", "PersonalId", "SchemaVersion", "ShortText", "Uuid", "Version", "Vnd", "birth_year_of",
    "check_dossier_code", "check_instant_text", "check_personal_id", "json_integer",
]
