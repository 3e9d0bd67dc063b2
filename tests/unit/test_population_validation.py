"""Checks before a lookup reaches the population database: ID structure against the date of birth, names, dates."""

from __future__ import annotations

import unicodedata
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.population_db.synthetic import citizens
from adapters.population_db.validation import (
    CENTURY_BY_DIGIT,
    PROVINCE_CODES,
    Invalid,
    check,
    check_id_number,
    normalise_name,
    parse_birth,
)

TODAY = date(2026, 12, 2)
births = st.dates(min_value=date(1900, 1, 1), max_value=TODAY)


def _number(province: str, birth: date, female: bool, tail: int) -> str:
    digit = 2 * ((birth.year - 1900) // 100) + int(female)
    return f"{province}{digit}{birth.year % 100:02d}{tail:06d}"


@given(st.sampled_from(sorted(PROVINCE_CODES)), births, st.booleans(), st.integers(0, 999_999))
def test_a_number_built_by_the_rules_passes_with_its_birth_date(
    province: str, birth: date, female: bool, tail: int
) -> None:
    number = _number(province, birth, female, tail)
    checked = check(number, "nguyễn văn an", birth.isoformat(), today=TODAY)
    assert checked.id_number == number
    assert checked.birth == birth.strftime("%Y%m%d") and checked.birth_year == birth.year


@given(st.sampled_from(sorted(PROVINCE_CODES)), births, st.booleans(), st.integers(0, 999_999), st.integers(1, 99))
def test_a_birth_year_the_number_does_not_encode_is_refused(
    province: str, birth: date, female: bool, tail: int, off: int
) -> None:
    number = _number(province, birth, female, tail)
    other = 1900 + (birth.year - 1900 + off) % (TODAY.year - 1900 + 1)  # another year from 1900 to this one
    with pytest.raises(Invalid, match="century digit and the birth-year digits"):
        check(number, "AN", str(other), today=TODAY)


@given(births, st.integers(0, 999_999))
def test_the_wrong_century_digit_is_refused(birth: date, tail: int) -> None:
    number = _number("001", birth, False, tail)
    wrong = str((int(number[3]) + 2) % 10)
    with pytest.raises(Invalid, match="century digit"):
        check_id_number(number[:3] + wrong + number[4:], birth.year)


@given(st.text(min_size=1, max_size=14))
def test_anything_but_twelve_ascii_digits_is_refused(value: str) -> None:
    if len(value) == 12 and value.isascii() and value.isdigit():
        return
    with pytest.raises(Invalid, match="12 digits"):
        check_id_number(value, 1990)


@pytest.mark.parametrize("province", ["000", "003", "097", "999"])
def test_an_unknown_province_code_is_refused(province: str) -> None:
    with pytest.raises(Invalid, match="province"):
        check_id_number(f"{province}090123456", 1990)


def test_reasons_never_repeat_the_value() -> None:
    for bad in ("0011900012345", "003190001234", "001390001234"):
        with pytest.raises(Invalid) as caught:
            check(bad, "AN", "1990-01-01", today=TODAY)
        assert bad not in caught.value.reason and "19900" not in caught.value.reason


@pytest.mark.parametrize(("text", "wire"), [
    ("1990-05-17", "19900517"), ("19900517", "19900517"), ("17/05/1990", "19900517"), ("1990", "1990"),
    (" 1990-05-17 ", "19900517"),
])
def test_accepted_date_formats(text: str, wire: str) -> None:
    assert check("001090001234", "AN", text, today=TODAY).birth == wire


@pytest.mark.parametrize(("text", "rule"), [
    ("1990-02-30", "real calendar day"), ("30/02/1990", "real calendar day"), ("2027-01-01", "future"),
    ("2027", "future"), ("1899", "before 1900"), ("05-17-1990", "use yyyy-mm-dd"), ("1990/05/17", "use"),
    ("", "use"), ("199O", "use"),
])
def test_refused_dates(text: str, rule: str) -> None:
    with pytest.raises(Invalid, match=rule):
        parse_birth(text, today=TODAY)


@given(st.lists(st.sampled_from(["nguyễn", "Văn", "AN", "đỗ", "thị", "HOA", "H'Hen", "Ê-ban"]), min_size=1,
                max_size=5), st.sampled_from([" ", "  ", "\t", " \u00a0"]))
def test_names_are_nfc_upper_case_with_single_spaces(words: list[str], gap: str) -> None:
    decomposed = unicodedata.normalize("NFD", gap.join(words))
    name = normalise_name(f" {decomposed} ")
    assert name == unicodedata.normalize("NFC", name) and name == name.upper()
    assert name.split(" ") == [unicodedata.normalize("NFC", w.upper()) for w in words]


@pytest.mark.parametrize("name", ["", "   ", "AN 2", "AN\u0000", "<b>AN</b>", "AN;DROP", "'-'", "A" * 101])
def test_refused_names(name: str) -> None:
    with pytest.raises(Invalid, match="full_name"):
        normalise_name(name)


def test_every_synthetic_citizen_passes_its_own_checks() -> None:
    for citizen in citizens(500, seed=3):
        checked = check(citizen.id_number, citizen.full_name.lower(), citizen.birth.strftime("%d/%m/%Y"), today=TODAY)
        assert checked.full_name == citizen.full_name
        assert CENTURY_BY_DIGIT[int(citizen.id_number[3])] + int(citizen.id_number[4:6]) == citizen.birth.year
