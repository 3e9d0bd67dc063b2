"""Between our lookup contract and the population database's SOAP (contracts/population/population.v1.wsdl): the
only place its element names appear. Pure functions."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final
from uuid import UUID

from adapters.population_db.validation import Checked
from contracts.population import (
    Address,
    CheckedField,
    CitizenDetails,
    CitizenField,
    LookupOutcome,
    LookupRequest,
)

NS: Final = "http://dancuquocgia.bca"
LOOKUP: Final = "TraCuuThongTinCongDan"
VERIFY: Final = "XacThucThongTinCongDan"
QUOTA_EXCEEDED: Final = "QUA_HAN_MUC"  # the database's quota fault (a Server fault: ask again later)

_STATUS: Final = {"KHOP": LookupOutcome.MATCH, "KHONG_KHOP": LookupOutcome.MISMATCH,
                  "KHONG_TIM_THAY": LookupOutcome.NOT_FOUND}
_FIELD: Final = {"HoVaTen": CheckedField.FULL_NAME, "NgayThangNamSinh": CheckedField.DATE_OF_BIRTH}
_GENDER: Final = {"1": "male", "2": "female", "3": "other"}
_ADDRESS: Final = {CitizenField.PERMANENT_ADDRESS: "ThuongTru", CitizenField.CURRENT_ADDRESS: "NoiOHienTai",
                   CitizenField.HOMETOWN: "QueQuan"}


def request_id(event_id: UUID) -> str:
    """MaYeuCau (at most 40): derived from the request, so the same request sent again is recognisably the same."""
    return f"GW-{event_id.hex}"


def request_fields(
    event: LookupRequest, checked: Checked, *, service_code: str, integration_code: str
) -> dict[str, Any]:
    """The operation's fields (both operations take the same request)."""
    return {
        "MaYeuCau": request_id(event.event_id), "MaDVC": service_code, "MaTichHop": integration_code,
        "MaDonVi": event.agency_code, "MaCanBo": event.officer_id, "SoDinhDanh": checked.id_number,
        "HoVaTen": checked.full_name, "NgayThangNamSinh": checked.birth,
    }


def personal_values(event: LookupRequest, checked: Checked | None) -> list[str]:
    """What a partner's error text must not repeat (gateway.soap.faults scrubs it)."""
    values = [event.id_number, event.full_name, event.date_of_birth]
    if checked is not None:
        values += [checked.id_number, checked.full_name, checked.birth]
        values += [word for word in checked.full_name.split() if len(word) > 1]
    return [v for v in dict.fromkeys(values) if v]


def verdict(answer: Any) -> tuple[LookupOutcome, tuple[CheckedField, ...]]:
    """Outcome and mismatched fields of either operation's answer."""
    result = getattr(answer, "KetQuaXacThuc", None) or answer
    status = getattr(result, "TrangThai", None)
    if status not in _STATUS:
        raise ValueError("the answer has no known TrangThai")
    outcome = _STATUS[status]
    fields = tuple(dict.fromkeys(_FIELD[f] for f in (getattr(result, "TruongKhongKhop", None) or []) if f in _FIELD))
    if outcome is LookupOutcome.MISMATCH and not fields:
        fields = (CheckedField.FULL_NAME, CheckedField.DATE_OF_BIRTH)  # it differs, and it did not say where
    return outcome, fields if outcome is LookupOutcome.MISMATCH else ()


def _address(element: Any) -> Address | None:
    if element is None:
        return None
    return Address(
        province_code=_short(element, "MaTinhThanh", 10), district_code=_short(element, "MaQuanHuyen", 10),
        ward_code=_short(element, "MaPhuongXa", 10), detail=_short(element, "ChiTiet", 500),
    )


def _short(element: Any, name: str, limit: int) -> str | None:
    value = getattr(element, name, None)
    return str(value)[:limit] if value else None


def citizen(answer: Any, give: Collection[CitizenField]) -> CitizenDetails | None:
    """The fields of the record the purpose allows (`give`), and nothing else; None when none are given."""
    record = getattr(answer, "CongDan", None)
    if record is None or not give:
        return None
    values: dict[str, Any] = {}
    if CitizenField.GENDER in give:
        values["gender"] = _GENDER.get(str(getattr(record, "GioiTinh", "") or ""))
    if CitizenField.NATIONALITY in give:
        values["nationality"] = _short(record, "QuocTich", 50)
    for field, name in _ADDRESS.items():
        if field in give:
            values[field.value] = _address(getattr(record, name, None))
    return CitizenDetails(**values)
