"""Real dossier volumes of one provincial centre (Quảng Ngãi, report 62/BC-HCC, 2019) shaping generated load.

The packaged CSV is the report's appendix 1 (one row per agency) plus two columns this project adds:
`agency_id`, a synthetic but well-formed electronic identifier (QCVN 102:2016 style, H55 = Quảng Ngãi),
and `sector`, the key of the procedure table the generator uses for that agency. Administrative units live
here and in the CSV only: another province swaps the file, not the code.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

CSV_NAME = "quang_ngai_2019.csv"

# Other figures of the same report (period 15 Dec 2018 – 14 Dec 2019, excluding the land rows).
REPORT_DOSSIERS = 66_500  # "~66,500 dossiers" (the CSV's non-land rows sum to 66,551)
SUBMITTED_ONLINE = 7_815
SUBMITTED_BY_POST = 2_450
RETURNED_BY_POST = 6_843
RESOLVED_SAME_DAY = 12_996
ON_TIME_RATE = 0.952
SATISFIED_RATE = 0.9986
RATINGS = 26_294

# Shares derived from the figures above (they apply to all agencies, land included).
POST_SUBMISSION_SHARE = SUBMITTED_BY_POST / REPORT_DOSSIERS
POST_RETURN_SHARE = RETURNED_BY_POST / REPORT_DOSSIERS
RATING_SHARE = RATINGS / REPORT_DOSSIERS
SAME_DAY_SHARE = RESOLVED_SAME_DAY / REPORT_DOSSIERS

# Where synthetic applicants live and were registered (not in the report; plausible, configurable).
PROVINCE_NAME = "tỉnh Quảng Ngãi"
PROVINCE_ID_CODE = "051"  # province-of-registration code in personal ID numbers
ORG_TAX_CODE_PREFIX = "43"  # first digits of tax codes issued by the province's tax department
# Other provinces' registration codes (the national list, 001–096 with gaps), for applicants born elsewhere.
OTHER_PROVINCE_ID_CODES = (
    "001", "002", "004", "006", "008", "010", "011", "012", "014", "015", "017", "019", "020", "022", "024",
    "025", "026", "027", "030", "031", "033", "034", "035", "036", "037", "038", "040", "042", "044", "045",
    "046", "048", "049", "052", "054", "056", "058", "060", "062", "064", "066", "067", "068", "070", "072",
    "074", "075", "077", "079", "080", "082", "083", "084", "086", "087", "089", "091", "092", "093", "094",
    "095", "096",
)
LOCAL_BIRTH_SHARE = 0.85
# (ward or commune, district) pairs used in synthetic addresses.
LOCALITIES = (
    ("phường Trần Phú", "thành phố Quảng Ngãi"),
    ("phường Nghĩa Chánh", "thành phố Quảng Ngãi"),
    ("phường Lê Hồng Phong", "thành phố Quảng Ngãi"),
    ("xã Tịnh Ấn Tây", "thành phố Quảng Ngãi"),
    ("thị trấn Châu Ổ", "huyện Bình Sơn"),
    ("xã Bình Thạnh", "huyện Bình Sơn"),
    ("thị trấn Sơn Tịnh", "huyện Sơn Tịnh"),
    ("thị trấn La Hà", "huyện Tư Nghĩa"),
    ("thị trấn Chợ Chùa", "huyện Nghĩa Hành"),
    ("thị trấn Mộ Đức", "huyện Mộ Đức"),
    ("phường Nguyễn Nghiêm", "thị xã Đức Phổ"),
    ("thị trấn Ba Tơ", "huyện Ba Tơ"),
    ("thị trấn Di Lăng", "huyện Sơn Hà"),
    ("thị trấn Trà Xuân", "huyện Trà Bồng"),
    ("xã An Vĩnh", "huyện Lý Sơn"),
)

# Administrative-unit codes, as the postal service's orders carry them (national list: 2-digit province,
# 5-digit ward). 51 is Quảng Ngãi on the national list (the personal ID's 051); the ward codes are synthetic but
# well-formed, like `agency_id`: a deployment takes both from the province's reference data.
PROVINCE_UNIT_CODE = "51"
WARD_CODES = {ward: f"51{n:03d}" for n, (ward, _district) in enumerate(LOCALITIES, start=1)}
# The one-stop centre as the postal service's sender or receiver (synthetic address and phone).
CENTRE_NAME = "Trung tâm Phục vụ hành chính công tỉnh Quảng Ngãi"
CENTRE_WARD = LOCALITIES[0]
CENTRE_ADDRESS = f"1 Hùng Vương, {CENTRE_WARD[0]}, {CENTRE_WARD[1]}, {PROVINCE_NAME}"
CENTRE_PHONE = "02553000000"


@dataclass(frozen=True, slots=True)
class AgencyVolume:
    """One row of the report, with the shares the generator draws from."""

    name: str
    agency_id: str
    sector: str
    total: int
    online: int
    resolved_total: int
    resolved_late: int
    pending_overdue: int
    withdrawn: int
    returned: int

    @property
    def online_share(self) -> float:
        return self.online / self.total if self.total else 0.0

    @property
    def withdrawn_share(self) -> float:
        return self.withdrawn / self.total if self.total else 0.0

    @property
    def refused_share(self) -> float:
        """Returned unresolved (trả lại hồ sơ không giải quyết): refused with a written reason."""
        return self.returned / self.total if self.total else 0.0

    @property
    def late_share(self) -> float:
        """Late among resolved dossiers."""
        return self.resolved_late / self.resolved_total if self.resolved_total else 0.0


def _parse(text: str) -> tuple[AgencyVolume, ...]:
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append(
            AgencyVolume(
                name=row["agency"], agency_id=row["agency_id"], sector=row["sector"], total=int(row["total"]),
                online=int(row["online"]), resolved_total=int(row["resolved_total"]),
                resolved_late=int(row["resolved_late"]), pending_overdue=int(row["pending_overdue"]),
                withdrawn=int(row["withdrawn"]), returned=int(row["returned"]),
            )
        )
    if not rows:
        raise ValueError(f"{CSV_NAME} has no agency rows")
    return tuple(rows)


@cache
def agencies() -> tuple[AgencyVolume, ...]:
    """Agency rows of the packaged CSV, in file order."""
    text = resources.files(__package__ or "gateway.loadgen").joinpath("data").joinpath(CSV_NAME).read_text("utf-8")
    return _parse(text)


def weights() -> tuple[int, ...]:
    """Per-agency weights (total dossiers), aligned with `agencies()`."""
    return tuple(a.total for a in agencies())


def total_dossiers() -> int:
    return sum(weights())


def overall_share(attr: str) -> float:
    """Total-weighted mean of a per-agency share, e.g. `overall_share("withdrawn_share")`."""
    rows = agencies()
    weighted: float = sum(getattr(a, attr) * a.total for a in rows)
    return weighted / sum(a.total for a in rows)


__all__ = [
    "CENTRE_ADDRESS", "CENTRE_NAME", "CENTRE_PHONE", "CENTRE_WARD", "LOCALITIES", "ON_TIME_RATE",
    "ORG_TAX_CODE_PREFIX", "OTHER_PROVINCE_ID_CODES", "POST_RETURN_SHARE", "POST_SUBMISSION_SHARE",
    "PROVINCE_ID_CODE", "PROVINCE_NAME", "PROVINCE_UNIT_CODE", "RATINGS", "RATING_SHARE", "REPORT_DOSSIERS",
    "RESOLVED_SAME_DAY", "RETURNED_BY_POST", "SAME_DAY_SHARE", "SATISFIED_RATE", "SUBMITTED_BY_POST",
    "SUBMITTED_ONLINE", "WARD_CODES", "AgencyVolume", "agencies", "overall_share", "total_dossiers", "weights",
]
