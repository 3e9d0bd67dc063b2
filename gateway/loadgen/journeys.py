"""Seeded generation of realistic dossier journeys: the lifecycle events the one-stop system would publish.

Every journey is one dossier: `dossier.received`, processing steps, at most one supplement request, land
financial obligations, at most one overdue apology, then an ending (resolved → result returned → maybe
rated; or not accepted / withdrawn / refused / stopped). Agencies, channels, late, withdrawn and refused
shares follow the packaged report figures (`volumes`). All times are office hours (07:30–11:30,
13:30–17:30, Monday–Friday; holidays ignored) in the time zone of `start`.

Models are built without validation (`_construct`, a lean `model_construct`) for speed and memory; the unit
tests prove that every event round-trips through the contracts' parser to an equal model.
"""

from __future__ import annotations

import gc
import heapq
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, TypeVar

from pydantic import BaseModel

from contracts.dossier import (
    Agency,
    Apology,
    Applicant,
    ApplicantKind,
    Channel,
    DossierSnapshot,
    DossierStatus,
    Fee,
    FeeCollection,
    FeeKind,
    Identity,
    IdentityKind,
    OnlinePayment,
    Procedure,
    ProcessingStep,
    Rating,
    ResultDocument,
    SubmittedDocument,
    Supplement,
)
from contracts.events import (
    DossierEvent,
    DossierReceived,
    FinancialObligationRequired,
    LifecycleEvent,
    NotAccepted,
    OverdueApology,
    ProcessingStepDone,
    Rated,
    Refused,
    Resolved,
    ResultReturned,
    Stopped,
    Supplemented,
    SupplementRequested,
    Withdrawn,
)
from gateway.loadgen import volumes

VIETNAM_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
# Monday after the report period opened (15 Dec 2018), first minute of office hours.
DEFAULT_START = datetime(2018, 12, 17, 7, 30, tzinfo=VIETNAM_TZ)

# Shares the report does not give (assumptions, kept here to tune).
SUPPLEMENT_SHARE = 0.05
NOT_ACCEPTED_SHARE_ONLINE = 0.03  # online dossiers are checked after submission and more often refused
NOT_ACCEPTED_SHARE_OTHER = 0.005
STOPPED_SHARE = 0.001
WITHDRAWN_WHILE_WAITING = 0.5  # share of withdrawals that happen while a supplement or payment is awaited
ONLINE_RESULT_SHARE = 0.5  # online applicants who take an electronic result rather than come in person
WORKING_DAYS_PER_YEAR = 250

# Office-hours clock: a "working second" counts only office time.
_DAY = 8 * 3600
_HALF = 4 * 3600
_MORNING = 7 * 3600 + 30 * 60
_AFTERNOON = 13 * 3600 + 30 * 60
_MINUTE = 60
_HOUR = 3600

RESULT_URL_BASE = "https://one-stop.example.vn/ket-qua/"
DOCUMENT_URL_BASE = "https://one-stop.example.vn/tep/"
CATALOGUE_URL_BASE = "https://dichvucong.gov.vn/kho-du-lieu/"
POPULATION_DATABASE = "CSDLQGDC"  # MaCSDL of the national population database (unverified code)
# Contract 1.4's index facts (illustrative shares, not from the report): drawn from a second random stream, so
# the journeys' other draws, and every test that counts them, are what they were before 1.4.
PAID_ONLINE_SHARE = {Channel.ONLINE: 0.6, Channel.POST: 0.1, Channel.IN_PERSON: 0.15}
PAID_ON_NATIONAL_PORTAL = 0.3  # of online payments; the rest on the province's platform
DIGITISED_SHARE = {Channel.ONLINE: 1.0, Channel.POST: 0.6, Channel.IN_PERSON: 0.7}
REUSED_SHARE = 0.1
FROM_CATALOGUE_SHARE = 0.3  # online citizens' identity copies taken from their store on the national portal
VNEID_SHARE = 0.6  # online citizens whose account was authenticated with VNeID
POPULATION_LOOKUP_SHARE = 0.4  # citizens' dossiers whose applicant was checked in the population database


_M = TypeVar("_M", bound=BaseModel)
_setattr = object.__setattr__
# Per model class: field names in order, the same names as one shared fields-set, and immutable defaults.
_META: dict[type[BaseModel], tuple[tuple[str, ...], set[str], dict[str, Any]]] = {}


def _meta(cls: type[BaseModel]) -> tuple[tuple[str, ...], set[str], dict[str, Any]]:
    meta = _META.get(cls)
    if meta is None:
        fields = cls.model_fields
        defaults = {
            n: f.default for n, f in fields.items()
            if not f.is_required() and f.default_factory is None and not isinstance(f.default, list | dict | set)
        }
        meta = _META[cls] = (tuple(fields), set(fields), defaults)
    return meta


def _construct(cls: type[_M], /, **values: Any) -> _M:
    """`cls.model_construct(**values)` for trusted values, lighter on memory.

    Every field must be given or have an immutable default. All instances of a class share one fields-set
    (every field is set; pydantic copies it before changing it), which saves ~1 KiB per snapshot.
    """
    names, fields_set, defaults = _meta(cls)
    if not values.keys() <= fields_set:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(values.keys() - fields_set)}")
    data = {n: values[n] if n in values else defaults[n] for n in names}
    m = cls.__new__(cls)
    _setattr(m, "__dict__", data)
    _setattr(m, "__pydantic_fields_set__", fields_set)
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


def _evolve(model: _M, update: dict[str, Any]) -> _M:
    """A copy of `model` with `update` applied (like `model_copy(update=...)`, sharing the fields-set)."""
    cls = type(model)
    data = dict(model.__dict__)
    data.update(update)
    m = cls.__new__(cls)
    _setattr(m, "__dict__", data)
    _setattr(m, "__pydantic_fields_set__", _meta(cls)[1])
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


@dataclass(frozen=True, slots=True)
class ProcedureSpec:
    """One administrative procedure as the generator uses it."""

    code: str
    name: str
    field_code: str
    field_name: str
    department: str  # the specialist office that appraises the dossier
    days: int  # statutory handling time, working days (>= 3)
    documents: tuple[str, ...]
    result: str  # name of the result document
    fees: tuple[tuple[str, str, int], ...] = ()  # (code, name, amount in VND)
    obligation_share: float = 0.0  # land: share of dossiers that must pay financial obligations
    same_day_share: float = 0.0  # share resolved on the spot
    organisation_share: float = 0.0  # share filed by an organisation rather than a citizen


_ID_COPY = "Bản sao giấy tờ tùy thân"
# Illustrative procedures per sector (codes follow the national procedure database's format; synthetic).
PROCEDURES: dict[str, tuple[ProcedureSpec, ...]] = {
    "information": (
        ProcedureSpec(
            code="1.004431", name="Cấp giấy phép xuất bản bản tin",
            field_code="TTTT-XB", field_name="Xuất bản, In và Phát hành",
            department="Phòng Thông tin - Báo chí - Xuất bản", days=10,
            documents=("Đơn đề nghị cấp giấy phép", "Mẫu trình bày"),
            result="Giấy phép xuất bản bản tin",
            organisation_share=0.9,
        ),
        ProcedureSpec(
            code="1.003739", name="Cấp giấy phép hoạt động in",
            field_code="TTTT-IN", field_name="Xuất bản, In và Phát hành",
            department="Phòng Thông tin - Báo chí - Xuất bản", days=7,
            documents=("Đơn đề nghị", "Bản sao giấy chứng nhận ĐKDN"),
            result="Giấy phép hoạt động in",
            organisation_share=1.0,
        ),
    ),
    "finance": (
        ProcedureSpec(
            code="1.005421", name="Đăng ký mã số đơn vị có quan hệ với ngân sách",
            field_code="TC-NS", field_name="Ngân sách nhà nước",
            department="Phòng Tin học - Thống kê", days=3,
            documents=("Tờ khai đăng ký mã số", "Quyết định thành lập"),
            result="Giấy chứng nhận mã số đơn vị có quan hệ với ngân sách",
            same_day_share=0.2, organisation_share=1.0,
        ),
        ProcedureSpec(
            code="2.001759", name="Thẩm định giá đất cụ thể",
            field_code="TC-GIA", field_name="Quản lý giá",
            department="Phòng Quản lý giá - Công sản", days=15,
            documents=("Văn bản đề nghị", "Phương án giá đất"),
            result="Văn bản thẩm định giá đất",
            organisation_share=1.0,
        ),
    ),
    "transport": (
        ProcedureSpec(
            code="1.002804", name="Đổi giấy phép lái xe do ngành Giao thông vận tải cấp",
            field_code="GTVT-DB", field_name="Đường bộ",
            department="Phòng Quản lý phương tiện và người lái", days=5,
            fees=(
                ("LP-GPLX", "Lệ phí cấp đổi giấy phép lái xe", 135_000),
            ),
            documents=("Đơn đề nghị đổi giấy phép lái xe", "Giấy khám sức khỏe", _ID_COPY),
            result="Giấy phép lái xe",
            same_day_share=0.3,
        ),
        ProcedureSpec(
            code="1.002861", name="Cấp phù hiệu xe ô tô kinh doanh vận tải",
            field_code="GTVT-VT", field_name="Vận tải đường bộ",
            department="Phòng Quản lý vận tải", days=3,
            documents=("Giấy đề nghị cấp phù hiệu", "Bản sao giấy đăng ký xe"),
            result="Phù hiệu xe",
            same_day_share=0.4, organisation_share=0.8,
        ),
        ProcedureSpec(
            code="1.001765", name="Cấp giấy phép lái xe quốc tế",
            field_code="GTVT-DB", field_name="Đường bộ",
            department="Phòng Quản lý phương tiện và người lái", days=5,
            fees=(
                ("LP-IDP", "Lệ phí cấp giấy phép lái xe quốc tế", 135_000),
            ),
            documents=("Tờ khai đề nghị cấp giấy phép lái xe quốc tế", "Bản sao giấy phép lái xe", _ID_COPY),
            result="Giấy phép lái xe quốc tế",
        ),
    ),
    "natural_resources": (
        ProcedureSpec(
            code="1.004177", name="Giao đất, cho thuê đất cho tổ chức",
            field_code="TNMT-DD", field_name="Đất đai",
            department="Chi cục Quản lý đất đai", days=20,
            fees=(
                ("PTD", "Phí thẩm định hồ sơ", 1_500_000),
            ),
            documents=("Đơn xin giao đất, cho thuê đất", "Trích lục bản đồ địa chính", "Dự án đầu tư được phê duyệt"),
            result="Quyết định giao đất, cho thuê đất",
            obligation_share=0.6, organisation_share=1.0,
        ),
        ProcedureSpec(
            code="1.004232", name="Cấp giấy phép khai thác nước dưới đất",
            field_code="TNMT-TNN", field_name="Tài nguyên nước",
            department="Phòng Tài nguyên nước - Khoáng sản", days=30,
            fees=(
                ("PTD-N", "Phí thẩm định đề án", 1_200_000),
            ),
            documents=("Đơn đề nghị cấp giấy phép", "Đề án khai thác nước dưới đất"),
            result="Giấy phép khai thác nước dưới đất",
            organisation_share=0.9,
        ),
    ),
    "science": (
        ProcedureSpec(
            code="1.000462", name="Cấp giấy phép tiến hành công việc bức xạ (sử dụng thiết bị X-quang chẩn đoán y tế)",
            field_code="KHCN-ATBX", field_name="An toàn bức xạ và hạt nhân",
            department="Phòng Quản lý chuyên ngành", days=10,
            fees=(
                ("PTD-BX", "Phí thẩm định an toàn bức xạ", 2_000_000),
            ),
            documents=("Đơn đề nghị cấp giấy phép", "Báo cáo đánh giá an toàn"),
            result="Giấy phép tiến hành công việc bức xạ",
            organisation_share=0.9,
        ),
    ),
    "education": (
        ProcedureSpec(
            code="1.005092", name="Cấp bản sao văn bằng, chứng chỉ từ sổ gốc",
            field_code="GD-VB", field_name="Văn bằng, chứng chỉ",
            department="Phòng Khảo thí và Quản lý chất lượng", days=3,
            documents=("Đơn đề nghị cấp bản sao", _ID_COPY),
            result="Bản sao văn bằng",
            same_day_share=0.4,
        ),
        ProcedureSpec(
            code="1.006390", name="Chuyển trường đối với học sinh trung học phổ thông",
            field_code="GD-TrH", field_name="Giáo dục trung học",
            department="Phòng Giáo dục Trung học", days=3,
            documents=("Đơn xin chuyển trường", "Học bạ"),
            result="Văn bản đồng ý chuyển trường",
        ),
    ),
    "labour": (
        ProcedureSpec(
            code="1.000401", name="Giải quyết hưởng trợ cấp thất nghiệp",
            field_code="LD-VL", field_name="Việc làm",
            department="Trung tâm Dịch vụ việc làm", days=20,
            documents=("Đề nghị hưởng trợ cấp thất nghiệp", "Sổ bảo hiểm xã hội", "Quyết định thôi việc"),
            result="Quyết định hưởng trợ cấp thất nghiệp",
        ),
        ProcedureSpec(
            code="1.000105", name="Cấp giấy phép lao động cho người lao động nước ngoài",
            field_code="LD-LDNN", field_name="Lao động nước ngoài",
            department="Phòng Lao động - Việc làm", days=5,
            fees=(
                ("LP-GPLD", "Lệ phí cấp giấy phép lao động", 600_000),
            ),
            documents=("Văn bản đề nghị", "Giấy chứng nhận sức khỏe", "Bản sao hộ chiếu"),
            result="Giấy phép lao động",
            organisation_share=1.0,
        ),
    ),
    "home_affairs": (
        ProcedureSpec(
            code="1.003822", name="Công nhận ban vận động thành lập hội",
            field_code="NV-TCPCP", field_name="Tổ chức phi chính phủ",
            department="Phòng Tổ chức - Biên chế", days=30,
            documents=("Đơn đề nghị", "Danh sách ban vận động"),
            result="Quyết định công nhận ban vận động",
        ),
    ),
    "justice": (
        ProcedureSpec(
            code="2.001417", name="Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam",
            field_code="TP-LLTP", field_name="Lý lịch tư pháp",
            department="Phòng Hành chính tư pháp", days=10,
            fees=(
                ("P-LLTP", "Phí cung cấp thông tin lý lịch tư pháp", 200_000),
            ),
            documents=("Tờ khai yêu cầu cấp Phiếu lý lịch tư pháp", _ID_COPY, "Bản sao sổ hộ khẩu"),
            result="Phiếu lý lịch tư pháp số 1",
        ),
        ProcedureSpec(
            code="2.000815", name="Đăng ký hành nghề và cấp Thẻ công chứng viên",
            field_code="TP-CC", field_name="Công chứng",
            department="Phòng Bổ trợ tư pháp", days=10,
            documents=("Giấy đề nghị đăng ký hành nghề", "Quyết định bổ nhiệm công chứng viên"),
            result="Thẻ công chứng viên",
        ),
    ),
    "planning_investment": (
        ProcedureSpec(
            code="2.001610", name="Đăng ký thành lập doanh nghiệp tư nhân",
            field_code="KHDT-DKDN", field_name="Thành lập và phát triển doanh nghiệp",
            department="Phòng Đăng ký kinh doanh", days=3,
            fees=(
                ("LP-DKDN", "Lệ phí đăng ký doanh nghiệp", 100_000),
            ),
            documents=("Giấy đề nghị đăng ký doanh nghiệp", _ID_COPY),
            result="Giấy chứng nhận đăng ký doanh nghiệp",
        ),
        ProcedureSpec(
            code="2.002009", name="Đăng ký thay đổi nội dung đăng ký doanh nghiệp",
            field_code="KHDT-DKDN", field_name="Thành lập và phát triển doanh nghiệp",
            department="Phòng Đăng ký kinh doanh", days=3,
            fees=(
                ("LP-DKDN", "Lệ phí đăng ký doanh nghiệp", 100_000),
            ),
            documents=("Thông báo thay đổi nội dung đăng ký", "Nghị quyết, quyết định của chủ sở hữu"),
            result="Giấy chứng nhận đăng ký doanh nghiệp",
            organisation_share=1.0,
        ),
    ),
    "industry_trade": (
        ProcedureSpec(
            code="2.000157", name="Cấp Giấy chứng nhận xuất xứ hàng hóa (C/O)",
            field_code="CT-XNK", field_name="Xuất nhập khẩu",
            department="Phòng Quản lý thương mại", days=3,
            documents=("Đơn đề nghị cấp C/O", "Tờ khai hải quan xuất khẩu", "Hóa đơn thương mại"),
            result="Giấy chứng nhận xuất xứ hàng hóa",
            same_day_share=0.6, organisation_share=1.0,
        ),
        ProcedureSpec(
            code="2.000620", name="Cấp Giấy phép bán lẻ sản phẩm rượu",
            field_code="CT-LT", field_name="Lưu thông hàng hóa trong nước",
            department="Phòng Quản lý thương mại", days=10,
            fees=(
                ("PTD-R", "Phí thẩm định kinh doanh rượu", 1_200_000),
            ),
            documents=("Đơn đề nghị cấp giấy phép", "Bản sao giấy chứng nhận ĐKDN"),
            result="Giấy phép bán lẻ sản phẩm rượu",
            organisation_share=0.7,
        ),
    ),
    "construction": (
        ProcedureSpec(
            code="1.009972", name="Cấp giấy phép xây dựng mới đối với công trình cấp đặc biệt, cấp I, cấp II",
            field_code="XD-HDXD", field_name="Hoạt động xây dựng",
            department="Phòng Quản lý hoạt động xây dựng", days=20,
            fees=(
                ("LP-GPXD", "Lệ phí cấp giấy phép xây dựng", 150_000),
            ),
            documents=("Đơn đề nghị cấp giấy phép xây dựng", "Bản vẽ thiết kế", "Giấy tờ về quyền sử dụng đất"),
            result="Giấy phép xây dựng",
            organisation_share=0.8,
        ),
        ProcedureSpec(
            code="1.009982", name="Cấp chứng chỉ hành nghề hoạt động xây dựng hạng II, III",
            field_code="XD-HDXD", field_name="Hoạt động xây dựng",
            department="Phòng Quản lý hoạt động xây dựng", days=20,
            fees=(
                ("LP-CCHN", "Lệ phí cấp chứng chỉ hành nghề", 300_000),
            ),
            documents=("Đơn đề nghị cấp chứng chỉ", "Bản sao văn bằng", "Bản khai kinh nghiệm"),
            result="Chứng chỉ hành nghề hoạt động xây dựng",
        ),
    ),
    "agriculture": (
        ProcedureSpec(
            code="1.001686", name="Kiểm dịch động vật, sản phẩm động vật vận chuyển ra khỏi địa bàn cấp tỉnh",
            field_code="NN-TY", field_name="Thú y",
            department="Chi cục Chăn nuôi và Thú y", days=3,
            fees=(
                ("P-KD", "Phí kiểm dịch động vật", 120_000),
            ),
            documents=("Giấy đăng ký kiểm dịch",),
            result="Giấy chứng nhận kiểm dịch",
            same_day_share=0.7,
        ),
        ProcedureSpec(
            code="1.003397", name="Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm nông lâm thủy sản",
            field_code="NN-QLCL", field_name="Quản lý chất lượng nông lâm sản và thủy sản",
            department="Chi cục Quản lý chất lượng", days=15,
            fees=(
                ("PTD-ATTP", "Phí thẩm định điều kiện an toàn thực phẩm", 700_000),
            ),
            documents=("Đơn đề nghị cấp giấy chứng nhận", "Bản thuyết minh điều kiện cơ sở"),
            result="Giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
            organisation_share=0.6,
        ),
    ),
    "culture": (
        ProcedureSpec(
            code="1.001029", name="Cấp Giấy phép đủ điều kiện kinh doanh dịch vụ karaoke",
            field_code="VH-VH", field_name="Văn hóa cơ sở",
            department="Phòng Quản lý văn hóa và Gia đình", days=5,
            fees=(
                ("PTD-KR", "Phí thẩm định cấp giấy phép karaoke", 4_000_000),
            ),
            documents=("Đơn đề nghị cấp giấy phép", "Bản sao giấy chứng nhận ĐKDN"),
            result="Giấy phép kinh doanh dịch vụ karaoke",
        ),
    ),
    "health": (
        ProcedureSpec(
            code="1.001907", name="Cấp chứng chỉ hành nghề khám bệnh, chữa bệnh đối với người Việt Nam",
            field_code="YT-KCB", field_name="Khám bệnh, chữa bệnh",
            department="Phòng Nghiệp vụ Y", days=30,
            fees=(
                ("PTD-CCHN", "Phí thẩm định cấp chứng chỉ hành nghề", 360_000),
            ),
            documents=(
                "Đơn đề nghị cấp chứng chỉ hành nghề", "Bản sao văn bằng chuyên môn",
                "Giấy xác nhận quá trình thực hành", "Giấy chứng nhận sức khỏe",
            ),
            result="Chứng chỉ hành nghề khám bệnh, chữa bệnh",
        ),
        ProcedureSpec(
            code="1.002425", name="Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm (Y tế)",
            field_code="YT-ATTP", field_name="An toàn thực phẩm",
            department="Chi cục An toàn vệ sinh thực phẩm", days=20,
            fees=(
                ("PTD-ATTP", "Phí thẩm định điều kiện an toàn thực phẩm", 500_000),
            ),
            documents=("Đơn đề nghị cấp giấy chứng nhận", "Bản thuyết minh cơ sở vật chất"),
            result="Giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
            organisation_share=0.5,
        ),
    ),
    "foreign_affairs": (
        ProcedureSpec(
            code="2.001816", name="Cho phép tổ chức hội nghị, hội thảo quốc tế",
            field_code="NgV-HNHT", field_name="Hội nghị, hội thảo quốc tế",
            department="Phòng Lãnh sự - Quản lý biên giới", days=15,
            documents=("Văn bản đề nghị", "Đề án tổ chức hội nghị"),
            result="Văn bản cho phép tổ chức hội nghị",
            organisation_share=1.0,
        ),
    ),
    "land": (
        ProcedureSpec(
            code="1.004227", name="Đăng ký biến động quyền sử dụng đất do chuyển nhượng",
            field_code="DD-DK", field_name="Đất đai",
            department="Bộ phận Đăng ký và Cấp giấy chứng nhận", days=10,
            fees=(
                ("LP-GCN", "Lệ phí cấp giấy chứng nhận", 100_000),
                ("PTD-DD", "Phí thẩm định hồ sơ cấp giấy chứng nhận", 400_000),
            ),
            documents=(
                "Đơn đăng ký biến động", "Hợp đồng chuyển nhượng đã công chứng", "Bản gốc giấy chứng nhận", _ID_COPY,
            ),
            result="Giấy chứng nhận quyền sử dụng đất, quyền sở hữu nhà ở và tài sản khác gắn liền với đất",
            obligation_share=0.9,
        ),
        ProcedureSpec(
            code="1.004257", name="Đăng ký đất đai, tài sản gắn liền với đất lần đầu",
            field_code="DD-DK", field_name="Đất đai",
            department="Bộ phận Đăng ký và Cấp giấy chứng nhận", days=30,
            fees=(
                ("LP-GCN", "Lệ phí cấp giấy chứng nhận", 100_000),
                ("PTD-DD", "Phí thẩm định hồ sơ cấp giấy chứng nhận", 400_000),
            ),
            documents=("Đơn đăng ký đất đai", "Giấy tờ về nguồn gốc sử dụng đất", _ID_COPY),
            result="Giấy chứng nhận quyền sử dụng đất, quyền sở hữu nhà ở và tài sản khác gắn liền với đất",
            obligation_share=0.7,
        ),
        ProcedureSpec(
            code="1.004203", name="Đăng ký thế chấp quyền sử dụng đất",
            field_code="DD-GDBD", field_name="Giao dịch bảo đảm",
            department="Bộ phận Đăng ký và Cấp giấy chứng nhận", days=3,
            fees=(
                ("LP-DKTC", "Lệ phí đăng ký thế chấp", 80_000),
            ),
            documents=("Phiếu yêu cầu đăng ký thế chấp", "Hợp đồng thế chấp", "Bản gốc giấy chứng nhận"),
            result="Giấy chứng nhận có xác nhận đăng ký thế chấp",
            same_day_share=0.3,
        ),
    ),
}

_FAMILY = ("Nguyễn", "Nguyễn", "Nguyễn", "Trần", "Lê", "Lê", "Phạm", "Huỳnh", "Hoàng", "Phan", "Vũ", "Võ", "Võ",
           "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý", "Trương", "Đinh")
_MIDDLE = (("Văn", "Hữu", "Đức", "Minh", "Công", "Quốc", "Thanh", "Ngọc"),
           ("Thị", "Thị", "Ngọc", "Thanh", "Minh", "Thu", "Kim", "Mỹ"))
_GIVEN = (("An", "Bình", "Cường", "Dũng", "Hải", "Hiếu", "Hùng", "Khoa", "Long", "Minh", "Nam", "Phong", "Phúc",
           "Quang", "Sơn", "Tài", "Thắng", "Trung", "Tuấn", "Việt"),
          ("Anh", "Chi", "Dung", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Ngân", "Nhung", "Oanh",
           "Phương", "Thảo", "Trang", "Tuyết", "Vân", "Yến", "Xuân"))
_STREETS = ("Quang Trung", "Lê Lợi", "Hùng Vương", "Phan Đình Phùng", "Nguyễn Nghiêm", "Trần Hưng Đạo",
            "Phạm Văn Đồng", "Nguyễn Du", "Bà Triệu", "Lê Trung Đình", "Hai Bà Trưng", "Nguyễn Trãi")
_ORG_FORMS = ("Công ty TNHH", "Công ty TNHH MTV", "Công ty Cổ phần", "Hợp tác xã", "Doanh nghiệp tư nhân")
_ORG_WORDS = ("Thương mại Dịch vụ", "Xây dựng", "Nông sản", "Thủy sản", "Vận tải", "Đầu tư", "Cơ khí", "Du lịch")
_ORG_NAMES = ("Minh Phát", "Hòa Bình", "Thành Công", "Phú Thịnh", "An Khang", "Tân Việt", "Sông Trà", "Thiên Ấn",
              "Đại Phong", "Hưng Long")
_MOBILE_PREFIXES = ("090", "091", "093", "094", "096", "097", "098", "032", "033", "034", "035", "036", "037",
                    "038", "039", "070", "076", "077", "078", "079", "081", "082", "083", "084", "085", "086",
                    "088", "089")

_NOT_ACCEPTED_REASONS = (
    "Hồ sơ không thuộc thẩm quyền giải quyết của cơ quan tiếp nhận.",
    "Thành phần hồ sơ không đầy đủ theo quy định; đã hướng dẫn người nộp hoàn thiện và nộp lại.",
    "Thông tin kê khai trên tờ khai không khớp với giấy tờ kèm theo.",
    "Bản điện tử của giấy tờ không rõ nét, không đọc được nội dung.",
)
_SUPPLEMENT_REASONS = (
    "Đề nghị bổ sung bản sao có chứng thực của giấy tờ tùy thân.",
    "Tờ khai thiếu chữ ký của người đề nghị; đề nghị ký và nộp lại.",
    "Đề nghị bổ sung văn bản ủy quyền hợp lệ của người được ủy quyền nộp hồ sơ.",
    "Bản vẽ, sơ đồ kèm theo chưa đúng mẫu quy định; đề nghị chỉnh sửa.",
)
_REFUSED_REASONS = (
    "Không đủ điều kiện giải quyết theo quy định của pháp luật hiện hành.",
    "Kết quả thẩm định, xác minh không đạt yêu cầu.",
    "Đối tượng đề nghị đang có tranh chấp, khiếu nại chưa được giải quyết.",
    "Hồ sơ đã được bổ sung nhưng vẫn không đáp ứng thành phần theo quy định.",
)
_WITHDRAWN_REASONS = (
    "Người nộp hồ sơ có đơn đề nghị rút hồ sơ.",
    "Người nộp hồ sơ không tiếp tục thực hiện thủ tục.",
    "Người nộp hồ sơ xin rút để điều chỉnh nội dung đề nghị.",
)
_STOPPED_REASONS = (
    "Cơ quan có thẩm quyền yêu cầu dừng giải quyết để thanh tra, kiểm tra.",
    "Đối tượng của hồ sơ bị kê biên để bảo đảm thi hành án; dừng giải quyết.",
)
_APOLOGY_REASONS = (
    "Hồ sơ cần xác minh thêm tại thực địa.",
    "Đang chờ ý kiến phối hợp của cơ quan liên quan.",
    "Số lượng hồ sơ tiếp nhận tăng đột biến; xin lỗi ông/bà và hẹn lại ngày trả kết quả.",
)
_OBLIGATION_REASON = (
    "Đã chuyển thông tin xác định nghĩa vụ tài chính đến cơ quan thuế; chờ người sử dụng đất nộp tiền "
    "theo thông báo của cơ quan thuế."
)
_RATING_COMMENTS = (
    "Cán bộ hướng dẫn tận tình.", "Giải quyết đúng hẹn.", "Thủ tục nhanh gọn.", "Thời gian chờ hơi lâu.",
)

_S = DossierStatus


@dataclass(frozen=True, slots=True)
class Journey:
    """One dossier's events, in order (versions 1..n)."""

    dossier_code: str
    events: tuple[DossierEvent, ...]

    @property
    def final_snapshot(self) -> DossierSnapshot:
        return self.events[-1].snapshot


def encode(event: LifecycleEvent) -> bytes:
    """The event as the one-stop system would publish it: JSON, UTF-8."""
    return event.__pydantic_serializer__.to_json(event)


def key(event: LifecycleEvent) -> bytes:
    """Kafka key: the dossier code (keeps a dossier's events in one partition, in order)."""
    return event.dossier_code.encode()


def events_in_time_order(journeys: Iterable[Journey]) -> Iterator[DossierEvent]:
    """All events of the journeys interleaved by `occurred_at` (each dossier's order kept), as a feed."""
    return heapq.merge(*(j.events for j in journeys), key=lambda e: e.occurred_at)


class _Clock:
    """Maps office-time seconds (0 = Monday 07:30 of the start week) to aware datetimes."""

    __slots__ = ("_base",)

    def __init__(self, start: datetime) -> None:
        monday = start.date() - timedelta(days=start.weekday())
        self._base = datetime(monday.year, monday.month, monday.day, tzinfo=start.tzinfo)

    def at(self, ws: int) -> datetime:
        day, sec = divmod(ws, _DAY)
        week, wday = divmod(day, 5)
        clock = _MORNING + sec if sec < _HALF else _AFTERNOON + sec - _HALF
        return self._base + timedelta(days=week * 7 + wday, seconds=clock)

    def working_seconds(self, moment: datetime) -> int:
        """Office-time seconds of `moment`, rounded forward to the next office minute if outside hours."""
        days = (moment.date() - self._base.date()).days
        week, wday = divmod(days, 7)
        if wday >= 5:
            return (week * 5 + 5) * _DAY
        t = moment.hour * 3600 + moment.minute * 60 + moment.second
        if t < _MORNING:
            sec = 0
        elif t < _MORNING + _HALF:
            sec = t - _MORNING
        elif t < _AFTERNOON:
            sec = _HALF
        elif t < _AFTERNOON + _HALF:
            sec = _HALF + t - _AFTERNOON
        else:
            return (week * 5 + wday + 1) * _DAY
        return (week * 5 + wday) * _DAY + sec


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Per-procedure contract objects, built once per call and shared by every snapshot (they are frozen)."""

    spec: ProcedureSpec
    procedure: Procedure
    fees: list[Fee]
    documents: list[str]
    summary: str


class _Generator:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.clock = _Clock(start)
        self.ws = self.clock.working_seconds(start)
        rows = volumes.agencies()
        self.rows = rows
        self.cum = list(accumulate(a.total for a in rows))
        self.agency_models = {a.agency_id: _construct(Agency, code=a.agency_id, name=a.name) for a in rows}
        self.procedures: dict[str, list[_Prepared]] = {}
        for a in rows:
            if a.sector not in PROCEDURES:
                raise ValueError(f"no procedure table for sector {a.sector!r} (agency {a.name!r})")
            if a.sector not in self.procedures:
                self.procedures[a.sector] = [_prepare(s) for s in PROCEDURES[a.sector]]
        self.mean_gap = _DAY * WORKING_DAYS_PER_YEAR / volumes.total_dossiers()
        online = volumes.overall_share("online_share")
        self.post_given_offline = volumes.POST_SUBMISSION_SHARE / (1 - online)
        self.post_return_other = max(
            0.0, (volumes.POST_RETURN_SHARE - volumes.POST_SUBMISSION_SHARE) / (1 - volumes.POST_SUBMISSION_SHARE)
        )
        self.sequences: dict[tuple[str, str], int] = {}
        self.extra = random.Random(f"{seed}/contract-1.4")  # the index facts' own stream (see PAID_ONLINE_SHARE)

    # ---- identities -------------------------------------------------------------------------------------
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def person_name(self, female: bool) -> str:
        rng = self.rng
        g = 1 if female else 0
        return f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE[g])} {rng.choice(_GIVEN[g])}"

    def address(self) -> str:
        rng = self.rng
        ward, district = rng.choice(volumes.LOCALITIES)
        return f"{rng.randint(1, 399)} {rng.choice(_STREETS)}, {ward}, {district}, {volumes.PROVINCE_NAME}"

    def phone(self) -> str:
        return f"{self.rng.choice(_MOBILE_PREFIXES)}{self.rng.randrange(10**7):07d}"

    def applicant(self, organisation_share: float) -> Applicant:
        rng = self.rng
        if rng.random() < organisation_share:
            name = f"{rng.choice(_ORG_FORMS)} {rng.choice(_ORG_WORDS)} {rng.choice(_ORG_NAMES)}"
            width = 10 - len(volumes.ORG_TAX_CODE_PREFIX)
            tax = f"{volumes.ORG_TAX_CODE_PREFIX}{rng.randrange(10**width):0{width}d}"
            return _construct(
                Applicant, kind=ApplicantKind.ORGANISATION, full_name=name, id_number=None, tax_code=tax,
                phone=self.phone(), email=f"lienhe{rng.randrange(100_000)}@example.vn", address=self.address(),
                identity=_construct(Identity, kind=IdentityKind.TAX_CODE, number=tax), vneid_verified=None,
            )
        female = rng.random() < 0.5
        year = rng.randint(1940, 2006)
        province = (
            volumes.PROVINCE_ID_CODE if rng.random() < volumes.LOCAL_BIRTH_SHARE
            else rng.choice(volumes.OTHER_PROVINCE_ID_CODES)
        )
        century_digit = (0 if year < 2000 else 2) + (1 if female else 0)
        id_number = f"{province}{century_digit}{year % 100:02d}{rng.randrange(10**6):06d}"
        email = f"congdan{rng.randrange(1_000_000)}@example.com" if rng.random() < 0.3 else None
        return _construct(
            Applicant, kind=ApplicantKind.CITIZEN, full_name=self.person_name(female), id_number=id_number,
            tax_code=None, phone=self.phone(), email=email, address=self.address(),
            identity=_construct(Identity, kind=IdentityKind.PERSONAL_ID, number=id_number), vneid_verified=None,
        )

    def dossier_code(self, agency_id: str, received: datetime) -> str:
        yymmdd = f"{received.year % 100:02d}{received.month:02d}{received.day:02d}"
        k = (agency_id, yymmdd)
        n = self.sequences.get(k, 0) + 1
        if n > 9999:
            raise ValueError(f"more than 9999 dossiers for {agency_id} on {yymmdd}")
        self.sequences[k] = n
        return f"{agency_id}-{yymmdd}-{n:04d}"

    # ---- one journey ------------------------------------------------------------------------------------
    def journey(self) -> Journey:
        rng = self.rng
        self.ws += int(rng.expovariate(1.0 / self.mean_gap))
        ws0 = self.ws
        row = self.rows[_bisect(self.cum, rng.random() * self.cum[-1])]
        prep = rng.choice(self.procedures[row.sector])
        spec = prep.spec
        if rng.random() < row.online_share:
            channel = Channel.ONLINE
        elif rng.random() < self.post_given_offline:
            channel = Channel.POST
        else:
            channel = Channel.IN_PERSON
        received_at = self.clock.at(ws0)
        code = self.dossier_code(row.agency_id, received_at)
        duration = spec.days * _DAY
        appointment = ws0 + duration
        applicant = self.applicant(spec.organisation_share)
        facts = self.index_facts(prep, channel, applicant, received_at)
        snapshot = _construct(
            DossierSnapshot, code=code, version=1, status=_S.RECEIVED, channel=channel, receipt_number=code,
            received_at=received_at, appointment_at=self.clock.at(appointment), procedure=prep.procedure,
            agency=self.agency_models[row.agency_id], applicant=facts.pop("applicant"),
            summary=prep.summary, steps_done=0, supplements=[],
            apology=None, decision_reason=None, finished_at=None, result_documents=[], returned_at=None,
            return_channel=None, rating=None, submission_place=None, refused_at=None, **facts,
        )
        b = _Builder(self, prep, snapshot, ws0)
        b.emit(
            DossierReceived, ws0, received_at, {}, channel=channel, receipt_number=code,
            appointment_at=snapshot.appointment_at, applicant=snapshot.applicant, procedure=snapshot.procedure,
            agency=snapshot.agency, fees=snapshot.fees,
        )

        not_accepted = NOT_ACCEPTED_SHARE_ONLINE if channel is Channel.ONLINE else NOT_ACCEPTED_SHARE_OTHER
        if rng.random() < not_accepted:
            b.terminal(NotAccepted, ws0 + rng.randint(10 * _MINUTE, _DAY), _S.NOT_ACCEPTED, _NOT_ACCEPTED_REASONS)
            return b.journey()

        r = rng.random()
        if r < row.withdrawn_share:
            ending = _S.WITHDRAWN
        elif r < row.withdrawn_share + row.refused_share:
            ending = _S.REFUSED
        elif r < row.withdrawn_share + row.refused_share + STOPPED_SHARE:
            ending = _S.STOPPED
        else:
            ending = _S.RESOLVED
        resolved = ending is _S.RESOLVED
        late = resolved and rng.random() < row.late_share
        same_day = resolved and not late and rng.random() < spec.same_day_share
        if same_day:
            t = b.step(ws0 + rng.randint(5 * _MINUTE, _HOUR), duration, final=True)
            self.finish(b, t + rng.randint(5 * _MINUTE, 30 * _MINUTE), prep, channel)
            return b.journey()

        supplement = rng.random() < SUPPLEMENT_SHARE
        waiting_withdrawal = ending is _S.WITHDRAWN and rng.random() < WITHDRAWN_WHILE_WAITING
        obligation = rng.random() < spec.obligation_share and (
            resolved or (ending is _S.WITHDRAWN and waiting_withdrawal and not supplement)
        )
        pre_steps = rng.randint(0, 2) if ending is _S.WITHDRAWN else rng.randint(1, 4)
        seg_start = ws0
        kinds: list[str] = []
        if supplement:
            asked = ws0 + int(duration * rng.uniform(0.1, 0.4))
            for t in _spread(rng, ws0, asked, pre_steps):
                b.step(t, duration)
            b.supplement_requested(asked, appointment)
            if waiting_withdrawal:
                b.terminal(Withdrawn, asked + rng.randint(_DAY, 15 * _DAY), _S.WITHDRAWN, _WITHDRAWN_REASONS)
                return b.journey()
            seg_start = asked + rng.randint(_DAY // 2, 10 * _DAY)
            appointment = seg_start + duration
            b.supplemented(seg_start, appointment)
        else:
            kinds = ["step"] * pre_steps

        if not resolved:
            if obligation:
                kinds.append("obligation")
            end = seg_start + int((appointment - seg_start) * rng.uniform(0.2, 0.95))
            for kind, t in zip(kinds, _spread(rng, seg_start, end, len(kinds)), strict=True):
                if kind == "step":
                    b.step(t, duration)
                else:
                    b.obligation(t)
            reasons = {_S.WITHDRAWN: _WITHDRAWN_REASONS, _S.REFUSED: _REFUSED_REASONS, _S.STOPPED: _STOPPED_REASONS}
            cls = {_S.WITHDRAWN: Withdrawn, _S.REFUSED: Refused, _S.STOPPED: Stopped}[ending]
            b.terminal(cls, end, ending, reasons[ending])
            return b.journey()

        if obligation:
            kinds.append("obligation")
        kinds.append("final")
        if late:
            apology_at = appointment - _DAY - rng.randint(_HOUR, _DAY)
            new_appointment = appointment + rng.randint(2 * _DAY, 10 * _DAY)
            finish_at = appointment + int((new_appointment - appointment) * rng.uniform(0.05, 0.95))
            seg_end = apology_at
        else:
            finish_at = seg_start + int((appointment - seg_start) * rng.uniform(0.3, 0.97))
            seg_end = finish_at
        for kind, t in zip(kinds, _spread(rng, seg_start, seg_end, len(kinds)), strict=True):
            if kind == "obligation":
                b.obligation(t)
            else:
                b.step(t, duration, final=kind == "final", after_payment=b.snapshot.status is _S.FINANCIAL_OBLIGATION)
        if late:
            b.apology(apology_at, appointment, new_appointment)
        self.finish(b, finish_at, prep, channel)
        return b.journey()

    def index_facts(
        self, prep: _Prepared, channel: Channel, applicant: Applicant, received_at: datetime
    ) -> dict[str, Any]:
        """Contract 1.4's snapshot fields at receipt: documents, payment, VNeID, databases, submission time."""
        x = self.extra
        citizen = applicant.kind is ApplicantKind.CITIZEN
        online = channel is Channel.ONLINE
        documents = []
        for name in prep.documents:
            catalogue = online and citizen and name == _ID_COPY and x.random() < FROM_CATALOGUE_SHARE
            digitised = catalogue or x.random() < DIGITISED_SHARE[channel]
            url = (
                f"{CATALOGUE_URL_BASE}{x.getrandbits(64):016x}" if catalogue
                else f"{DOCUMENT_URL_BASE}{x.getrandbits(64):016x}.pdf" if digitised else None
            )
            documents.append(_construct(
                SubmittedDocument, name=name, url=url, digitised=digitised,
                reused=digitised and not catalogue and x.random() < REUSED_SHARE, from_national_catalogue=catalogue,
            ))
        payment = None
        if any(fee.amount > 0 for fee in prep.fees) and x.random() < PAID_ONLINE_SHARE[channel]:
            national = x.random() < PAID_ON_NATIONAL_PORTAL
            payment = OnlinePayment.NATIONAL_PORTAL if national else OnlinePayment.PROVINCIAL_PLATFORM
        collection = FeeCollection.ONLINE if payment is not None else FeeCollection.AT_COUNTER
        fees = [
            _construct(
                Fee, code=fee.code, name=fee.name, amount=fee.amount, collection=collection,
                kind=FeeKind.CHARGE if fee.name.startswith("Lệ phí") else FeeKind.FEE,
            )
            for fee in prep.fees
        ]
        if online and citizen:
            applicant = _evolve(applicant, {"vneid_verified": x.random() < VNEID_SHARE})
        consulted = [POPULATION_DATABASE] if citizen and x.random() < POPULATION_LOOKUP_SHARE else []
        submitted_at = received_at - timedelta(minutes=x.randint(5, 3 * 24 * 60)) if online else received_at
        return {
            "applicant": applicant, "submitted_documents": documents, "fees": fees, "online_payment": payment,
            "databases_consulted": consulted, "submitted_at": submitted_at,
        }

    def finish(self, b: _Builder, ws: int, prep: _Prepared, channel: Channel) -> None:
        """Resolved → result returned → maybe rated."""
        rng = self.rng
        code = b.snapshot.code
        docs = [
            _construct(
                ResultDocument, code=f"{code}-KQ01", name=prep.spec.result,
                url=f"{RESULT_URL_BASE}{self.uuid().hex}.pdf",
            )
        ]
        ws, at = b.when(ws)
        b.emit(Resolved, ws, at, {"status": _S.RESOLVED, "finished_at": at, "result_documents": docs},
               result_documents=docs)
        if channel is Channel.POST or rng.random() < self.post_return_other:
            back, ws = Channel.POST, ws + rng.randint(_DAY, 4 * _DAY)
        elif channel is Channel.ONLINE and rng.random() < ONLINE_RESULT_SHARE:
            back, ws = Channel.ONLINE, ws + rng.randint(_MINUTE, 2 * _HOUR)
        else:
            back, ws = Channel.IN_PERSON, ws + rng.randint(10 * _MINUTE, 3 * _DAY)
        ws, at = b.when(ws)
        b.emit(ResultReturned, ws, at, {"status": _S.RESULT_RETURNED, "returned_at": at, "return_channel": back},
               channel=back)
        if rng.random() < volumes.RATING_SHARE:
            ws, at = b.when(ws + rng.randint(_MINUTE, 4 * _HOUR))
            u = rng.random()
            dissatisfied = 1 - volumes.SATISFIED_RATE
            level = (1 if u < dissatisfied / 3 else 2) if u < dissatisfied else (4 if u < 0.7 else 3)
            comment = rng.choice(_RATING_COMMENTS) if rng.random() < 0.1 else None
            rating = _construct(Rating, level=level, comment=comment, rated_at=at)
            b.emit(Rated, ws, at, {"rating": rating}, rating=rating)


class _Builder:
    """Accumulates one journey's events, keeping the snapshot consistent with each event."""

    __slots__ = ("correlation", "events", "gen", "last_id", "last_ws", "prep", "snapshot")

    def __init__(self, gen: _Generator, prep: _Prepared, snapshot: DossierSnapshot, ws0: int) -> None:
        self.gen = gen
        self.prep = prep
        self.snapshot = snapshot
        self.events: list[DossierEvent] = []
        self.correlation = gen.uuid()
        self.last_id: uuid.UUID | None = None
        self.last_ws = ws0 - _MINUTE

    def journey(self) -> Journey:
        return Journey(self.snapshot.code, tuple(self.events))

    def when(self, ws: int) -> tuple[int, datetime]:
        """Office-time `ws` moved to at least a minute after the previous event, and its datetime."""
        ws = max(ws, self.last_ws + _MINUTE)
        return ws, self.gen.clock.at(ws)

    def emit(self, cls: Any, ws: int, at: datetime, update: dict[str, Any], **body: Any) -> None:
        """Append one event at `ws`/`at` (from `when`), the snapshot updated with `update` and a new version."""
        version = len(self.events) + 1
        update["version"] = version
        snapshot = _evolve(self.snapshot, update)
        event_id = self.gen.uuid()
        event = _construct(
            cls, event_id=event_id, occurred_at=at, dossier_code=snapshot.code, correlation_id=self.correlation,
            causation_id=self.last_id, dossier_version=version, snapshot=snapshot, **body,
        )
        self.events.append(event)
        self.snapshot = snapshot
        self.last_id = event_id
        self.last_ws = ws

    def step(self, ws: int, duration: int, *, final: bool = False, after_payment: bool = False) -> int:
        gen = self.gen
        rng = gen.rng
        started = self.last_ws
        ws, at = self.when(ws)
        department = self.prep.spec.department
        if self.snapshot.steps_done == 0 and not final:
            title, dept, content = "Chuyên viên", "Bộ phận Tiếp nhận và Trả kết quả", (
                "Tiếp nhận, kiểm tra hồ sơ và chuyển phòng chuyên môn giải quyết."
            )
        elif after_payment:
            title, dept, content = "Chuyên viên", department, (
                "Nhận chứng từ hoàn thành nghĩa vụ tài chính; tiếp tục giải quyết hồ sơ."
            )
        elif final:
            title, dept, content = rng.choice(("Giám đốc", "Phó Giám đốc")), "Lãnh đạo cơ quan", (
                "Phê duyệt, ký kết quả giải quyết hồ sơ."
            )
        else:
            title, dept, content = rng.choice(
                (("Chuyên viên", department, "Thẩm định hồ sơ, đề xuất phương án giải quyết."),
                 ("Trưởng phòng", department, "Xem xét hồ sơ, trình lãnh đạo phê duyệt."))
            )
        step = _construct(
            ProcessingStep, officer=gen.person_name(rng.random() < 0.5), title=title, department=dept, content=content,
            started_at=gen.clock.at(started), processed_at=at,
            due_at=gen.clock.at(started + max(_DAY // 2, duration // 4)),
        )
        self.emit(ProcessingStepDone, ws, at, {"status": _S.PROCESSING, "steps_done": self.snapshot.steps_done + 1},
                  step=step)
        return ws

    def supplement_requested(self, ws: int, appointment: int) -> None:
        reason = self.gen.rng.choice(_SUPPLEMENT_REASONS)
        ws, at = self.when(ws)
        sup = _construct(
            Supplement, requested_at=at, reason=reason, previous_appointment_at=self.gen.clock.at(appointment),
            completed_at=None, new_appointment_at=None,
        )
        self.emit(SupplementRequested, ws, at, {"status": _S.SUPPLEMENT_REQUESTED, "supplements": [sup]},
                  reason=reason)

    def supplemented(self, ws: int, appointment: int) -> None:
        new_at = self.gen.clock.at(appointment)
        ws, at = self.when(ws)
        sup = _evolve(self.snapshot.supplements[0], {"completed_at": at, "new_appointment_at": new_at})
        self.emit(Supplemented, ws, at, {"status": _S.PROCESSING, "supplements": [sup], "appointment_at": new_at},
                  new_appointment_at=new_at)

    def obligation(self, ws: int) -> None:
        rng = self.gen.rng
        value = 10 ** rng.uniform(8.3, 9.7)  # land value, VND (≈ 200 million – 5 billion)
        # registration fee 0.5 %, or with personal income tax on a transfer 2.5 %, or a land-use levy ~3 %
        amount = int(value * rng.choice((0.005, 0.025, 0.03))) // 1000 * 1000
        ws, at = self.when(ws)
        self.emit(FinancialObligationRequired, ws, at, {"status": _S.FINANCIAL_OBLIGATION}, amount=amount,
                  reason=_OBLIGATION_REASON)

    def apology(self, ws: int, appointment: int, new_appointment: int) -> None:
        reason = self.gen.rng.choice(_APOLOGY_REASONS)
        ws, at = self.when(ws)
        new_at = self.gen.clock.at(new_appointment)
        apology = _construct(
            Apology, sent_at=at, reason=reason, previous_appointment_at=self.gen.clock.at(appointment),
            new_appointment_at=new_at,
        )
        self.emit(OverdueApology, ws, at, {"apology": apology, "appointment_at": new_at}, reason=reason,
                  new_appointment_at=new_at)

    def terminal(self, cls: Any, ws: int, status: DossierStatus, reasons: tuple[str, ...]) -> None:
        reason = self.gen.rng.choice(reasons)
        ws, at = self.when(ws)
        update: dict[str, Any] = {"status": status, "decision_reason": reason, "finished_at": at}
        if status in (_S.NOT_ACCEPTED, _S.REFUSED):
            update["refused_at"] = at  # NgayTuChoi
        self.emit(cls, ws, at, update, reason=reason)


def _prepare(spec: ProcedureSpec) -> _Prepared:
    if spec.days < 3:
        raise ValueError(f"procedure {spec.code}: statutory time must be at least 3 working days")
    procedure = _construct(
        Procedure, code=spec.code, name=spec.name, field_code=spec.field_code, field_name=spec.field_name
    )
    fees = [_construct(Fee, code=c, name=n, amount=a) for c, n, a in spec.fees]
    return _Prepared(spec, procedure, fees, list(spec.documents), f"Hồ sơ đề nghị: {spec.name}")


def _spread(rng: random.Random, lo: int, hi: int, n: int) -> list[int]:
    """`n` sorted random instants strictly inside (lo, hi)."""
    if n == 0:
        return []
    if hi - lo <= n + 1:
        return [lo + i + 1 for i in range(n)]
    return sorted(rng.randint(lo + 1, hi - 1) for _ in range(n))


def _bisect(cum: list[int], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] > x:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _generator(count: int, seed: int, start: datetime | None) -> _Generator:
    if count < 0:
        raise ValueError("count must be >= 0")
    if start is None:
        start = DEFAULT_START
    elif start.tzinfo is None:
        start = start.replace(tzinfo=VIETNAM_TZ)
    return _Generator(seed, start)


def generate_journeys(count: int, *, seed: int = 0, start: datetime | None = None) -> list[Journey]:
    """`count` dossier journeys in order of receipt, identical for the same seed and start.

    `start` (default 17 Dec 2018 07:30 +07:00) is when the first dossier may arrive; a naive datetime is
    taken as Vietnam time. Arrivals follow the report's yearly volume spread over office hours.
    """
    generator = _generator(count, seed, start)
    # Many small acyclic objects: the cyclic GC would rescan them over and over for nothing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [generator.journey() for _ in range(count)]
    finally:
        if was_enabled:
            gc.enable()


def iter_journeys(count: int, *, seed: int = 0, start: datetime | None = None) -> Iterator[Journey]:
    """The same journeys as `generate_journeys`, one at a time (constant memory for long feeds)."""
    generator = _generator(count, seed, start)
    for _ in range(count):
        yield generator.journey()


__all__ = [
    "DEFAULT_START", "PROCEDURES", "Journey", "ProcedureSpec", "encode", "events_in_time_order", "generate_journeys",
    "iter_journeys", "key",
]
