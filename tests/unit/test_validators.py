"""Validators of dossier codes, personal ID numbers and VND amounts refuse what the domain forbids."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.validators import DossierCode, PersonalId, Vnd, birth_year_of

codes = TypeAdapter(DossierCode)
ids = TypeAdapter(PersonalId)
vnd = TypeAdapter(Vnd)


@pytest.mark.parametrize("code", ["000.00.01.H34-191215-0007", "G22.39.05.H55-240229-9999"])
def test_valid_dossier_codes(code: str) -> None:
    assert codes.validate_python(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "000.00.01.H34-191315-0007",  # month 13
        "000.00.01.H34-230229-0001",  # 29 Feb in a non-leap year
        "000.00.01.H34-191215-007",  # 3-digit sequence
        "000.00.01.h34-191215-0007",  # lower case
        "000.00.01.H34-191215-0007 ",  # trailing space
        "",
        "x" * 10_000,
    ],
)
def test_invalid_dossier_codes(code: str) -> None:
    with pytest.raises(ValidationError):
        codes.validate_python(code)


def test_personal_id_structure() -> None:
    assert ids.validate_python("051090001234") == "051090001234"
    assert birth_year_of("051090001234") == 1990
    assert birth_year_of("051305001234") == 2005


@pytest.mark.parametrize(
    "value",
    [
        "05109000123",  # 11 digits
        "0510900012345",  # 13 digits
        "000090001234",  # province 000
        "097090001234",  # province beyond 096
        "05109000123a",
        "٠٥١٠٩٠٠٠١٢٣٤",  # Arabic-Indic digits are digits to str.isdigit, not to us
    ],
)
def test_invalid_personal_ids(value: str) -> None:
    with pytest.raises(ValidationError):
        ids.validate_python(value)


def test_personal_id_birth_year_in_future_is_refused() -> None:
    yy = (date.today().year + 1) % 100
    with pytest.raises(ValidationError):
        ids.validate_python(f"0513{yy:02d}001234")


def test_vnd_is_whole_dong() -> None:
    assert vnd.validate_python(150_000) == 150_000
    for bad in (1.5, "150000", -1, 10**14, True):
        with pytest.raises(ValidationError):
            vnd.validate_python(bad)
