"""Validators for the domain's identifiers and values: dossier codes, personal ID numbers, dates, VND."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StrictInt

# Circular 01/2018/TT-VPCP art. 19: <agency electronic id>-<YYMMDD>-<NNNN>, e.g. 000.00.01.H34-191215-0007.
DOSSIER_CODE_PATTERN = r"^[0-9A-Z]{3}\.[0-9A-Z]{2}\.[0-9A-Z]{2}\.[A-Z][0-9]{2}-[0-9]{6}-[0-9]{4}$"
_DOSSIER_CODE_RE = re.compile(DOSSIER_CODE_PATTERN)

PERSONAL_ID_PATTERN = r"^[0-9]{12}$"
_PERSONAL_ID_RE = re.compile(PERSONAL_ID_PATTERN)

# Digit 4 of the personal ID number encodes gender and century: 0/1 → 1900s, 2/3 → 2000s, ...
_CENTURY_BY_DIGIT = {0: 1900, 1: 1900, 2: 2000, 3: 2000, 4: 2100, 5: 2100, 6: 2200, 7: 2200, 8: 2300, 9: 2300}
# Province-of-registration codes run 001..096 (kept as a range: the list changes when provinces merge).
_PROVINCE_CODE_MAX = 96

MAX_VND = 10**13  # 10,000 billion VND: far above any administrative fee or land levy.
# Every integer the gateway stores must fit its column on SQLite and PostgreSQL alike (BIGINT / INTEGER):
# one that does not is refused here, as invalid input, instead of failing inside the store.
MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1


def check_dossier_code(value: str) -> str:
    """Return the code if it is `<agency>-<YYMMDD>-<NNNN>` with a real receipt date."""
    if not _DOSSIER_CODE_RE.fullmatch(value):
        raise ValueError("dossier code must look like 000.00.01.H34-191215-0007")
    yymmdd = value.rsplit("-", 2)[1]
    try:
        date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))
    except ValueError:
        raise ValueError("dossier code carries an impossible receipt date") from None
    return value


def check_personal_id(value: str) -> str:
    """Return the 12-digit personal ID number if its structure is plausible (there is no check digit)."""
    if not _PERSONAL_ID_RE.fullmatch(value):
        raise ValueError("personal ID number must be exactly 12 digits")
    province = int(value[0:3])
    if not 1 <= province <= _PROVINCE_CODE_MAX:
        raise ValueError("personal ID number has an unknown province-of-registration code")
    birth_year = _CENTURY_BY_DIGIT[int(value[3])] + int(value[4:6])
    if birth_year > date.today().year:
        raise ValueError("personal ID number encodes a birth year in the future")
    return value


def birth_year_of(personal_id: str) -> int:
    """Birth year encoded in digits 4–6 of a personal ID number."""
    return _CENTURY_BY_DIGIT[int(personal_id[3])] + int(personal_id[4:6])


DossierCode = Annotated[
    str, Field(pattern=DOSSIER_CODE_PATTERN, examples=["000.00.01.H34-191215-0007"]),
    AfterValidator(check_dossier_code),
]
PersonalId = Annotated[
    str, Field(pattern=PERSONAL_ID_PATTERN, description="12-digit personal identification number"),
    AfterValidator(check_personal_id),
]
# Money is whole đồng: floats are refused so that no amount is ever rounded.
Vnd = Annotated[StrictInt, Field(ge=0, le=MAX_VND, description="amount in VND (integer đồng)")]
# Every instant carries its offset; the portal's local time (Asia/Ho_Chi_Minh) is derived in mappings.
Instant = AwareDatetime
ShortText = Annotated[str, Field(min_length=1, max_length=500)]
LongText = Annotated[str, Field(min_length=1, max_length=4000)]

__all__ = [
    "DOSSIER_CODE_PATTERN", "MAX_INT32", "MAX_INT64", "MAX_VND", "PERSONAL_ID_PATTERN", "DossierCode", "Instant",
    "LongText", "PersonalId", "ShortText", "Vnd", "birth_year_of", "check_dossier_code", "check_personal_id",
]
