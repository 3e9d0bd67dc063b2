"""A generated synthetic population (no real people): what the simulator answers from and what tests look for.

Names are drawn from syllable lists independently (family, middle and given name), dates of birth uniformly from
1930 to 2015, ID numbers built by the structure rules (a province code, the gender/century digit, the two
birth-year digits, six random digits), addresses from made-up street names. A seed gives the same population.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from adapters.population_db.validation import PROVINCE_CODES

FAMILY: Final = ("NGUYỄN", "TRẦN", "LÊ", "PHẠM", "HOÀNG", "HUỲNH", "PHAN", "VŨ", "VÕ", "ĐẶNG", "BÙI", "ĐỖ", "HỒ",
                 "NGÔ", "DƯƠNG", "LÝ")
MIDDLE: Final = ("VĂN", "THỊ", "HỮU", "ĐỨC", "MINH", "NGỌC", "THANH", "QUỐC", "XUÂN", "THU", "GIA", "BẢO")
GIVEN: Final = ("AN", "BÌNH", "CHÂU", "DŨNG", "GIANG", "HÀ", "HẢI", "HÙNG", "KHÁNH", "LAN", "LINH", "LONG", "MAI",
                "NAM", "NGA", "PHÚC", "QUÂN", "SƠN", "TÂM", "THẢO", "TRANG", "TUẤN", "UYÊN", "VY", "YẾN")
STREETS: Final = ("Mẫu Đơn", "Thử Nghiệm", "Giả Định", "Mô Phỏng", "Ví Dụ", "Tổng Hợp")
FIRST_DAY: Final = date(1930, 1, 1)
LAST_DAY: Final = date(2015, 12, 31)


@dataclass(frozen=True, slots=True)
class Place:
    province: str
    district: str
    ward: str
    detail: str


@dataclass(frozen=True, slots=True)
class Citizen:
    id_number: str
    family: str
    middle: str
    given: str
    gender: str  # "1" male, "2" female (the database's codes)
    birth: date
    nationality: str
    permanent: Place
    current: Place
    hometown: Place

    @property
    def full_name(self) -> str:
        return f"{self.family} {self.middle} {self.given}"


def _place(rng: random.Random, province: str) -> Place:
    district = f"{rng.randrange(100, 999)}"
    return Place(province[1:], district, f"{rng.randrange(10000, 99999)}",
                 f"Số {rng.randrange(1, 300)} đường {rng.choice(STREETS)}")


def citizens(count: int, *, seed: int = 1) -> Iterator[Citizen]:
    """`count` citizens with distinct ID numbers."""
    rng = random.Random(seed)
    provinces = sorted(PROVINCE_CODES)
    span = (LAST_DAY - FIRST_DAY).days
    seen: set[str] = set()
    while len(seen) < count:
        birth = FIRST_DAY + timedelta(days=rng.randrange(span + 1))
        female = rng.random() < 0.5
        digit = 2 * ((birth.year - 1900) // 100) + (1 if female else 0)
        province = rng.choice(provinces)
        number = f"{province}{digit}{birth.year % 100:02d}{rng.randrange(10**6):06d}"
        if number in seen:
            continue
        seen.add(number)
        yield Citizen(
            id_number=number, family=rng.choice(FAMILY), middle="THỊ" if female else rng.choice(MIDDLE),
            given=rng.choice(GIVEN), gender="2" if female else "1", birth=birth, nationality="VN",
            permanent=_place(rng, province), current=_place(rng, rng.choice(provinces)),
            hometown=_place(rng, province),
        )


def population(count: int, *, seed: int = 1) -> dict[str, Citizen]:
    """ID number → citizen."""
    return {c.id_number: c for c in citizens(count, seed=seed)}
