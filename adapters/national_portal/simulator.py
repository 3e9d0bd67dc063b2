"""Simulator of the national public service portal's REST/JSON API, a real aiohttp server with fault knobs."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.simulation import KNOBS_PATH as KNOBS_PATH
from gateway.simulation import STATS_PATH as STATS_PATH
from gateway.simulation import Simulator, argument_parser, knob_arguments, knob_number, knob_strings, run

LOGIN_PATH = "/api/login"
SERVICE_PATH = "/api/service"
DOSSIERS_PATH = "/_sim/dossiers"
DOSSIER_PATH = "/_sim/dossiers/{code}"
RESET_PATH = "/_sim/reset"

SERVICE_SNAPSHOT = "DongBoHoSoMC"
SERVICE_STEP = "CapNhatTienDoHoSoMC"
SERVICE_LOOKUP = "TraCuuHoSo"
# The ratings service name is not verified against the real portal; clients must take it from here.
SERVICE_RATING = "DongBoDanhGiaMC"
SERVICES = (SERVICE_SNAPSHOT, SERVICE_STEP, SERVICE_LOOKUP, SERVICE_RATING)

DSTCODE_HEADER = "dstcode"
IDEMPOTENCY_HEADER = "Idempotency-Key"

ERROR_REJECTED = 1
ERROR_SESSION = 2
ERROR_EXISTS = 3  # one province's client reads 3 and -3 as "already exists" and re-sends as an update
ERROR_NOT_FOUND = 4  # ours: the real portal's answer to an update of an unknown dossier is not public
MSG_EXISTS = "Hồ sơ đã tồn tại"
MSG_SUCCESS = "Thành công"
MSG_SESSION_EXPIRED = "Phiên làm việc đã hết hạn"
MSG_SESSION_INVALID = "Phiên làm việc không hợp lệ"
MSG_BAD_LOGIN = "Sai tên đăng nhập, mật khẩu hoặc mã đơn vị (dstcode)"
MSG_BUSINESS_REJECTION = "Hồ sơ bị từ chối (business rejection)"
MSG_NOT_FOUND = "Không tìm thấy hồ sơ"

SNAPSHOT_MANDATORY = (
    "MaHoSo",
    "MaTTHC",
    "SoBienNhan",
    "ChuHoSo",
    "NgayTiepNhan",
    "NgayHenTra",
    "TrangThaiHoSo",
    "DonViXuLy",
    "HinhThuc",
    # What the national index reads and one province's code always sends (DOMAIN.md §1).
    "KenhThucHien",
    "NgayNopHoSo",
    "DinhDanhCHS",
)
SNAPSHOT_DATES = (
    "NgayTiepNhan", "NgayHenTra", "NgayTra", "NgayKetThucXuLy", "NgayNopHoSo", "NgayTuChoi",
    "NgayNhanHoSoQuaBuuChinh", "NgayTraKetQuaQuaBuuChinh",
)
# Flags sent as 0/1 (numbers or digit strings, like the codes), and the other small code lists, when present.
SNAPSHOT_FLAGS = ("TaiKhoanDuocXacThucVoiVNeID", "HoSoCoThanhPhanSoHoa")
DOCUMENT_FLAGS = ("DuocSoHoa", "DuocTaiSuDung", "DuocLayTuKhoDMQG")
_URL_RE = re.compile(r"^https?://[^\s]+$")
STEP_DATES = ("ThoiDiemXuLy", "NgayBatDau", "NgayKetThucTheoQuyDinh")
RATING_DATES = ("NgayDanhGia",)
# Never written to logs (Decree 13/2023); kept here so reviewers can see what is sensitive.
PERSONAL_FIELDS = frozenset({"ChuHoSo", "SoDienThoai", "Email", "MaDoiTuong", "DinhDanhCHS"})

DOSSIER_CODE_RE = re.compile(r"^[0-9A-Z]{3}\.[0-9A-Z]{2}\.[0-9A-Z]{2}\.[A-Z][0-9]{2}-\d{6}-\d{4}$", re.ASCII)
_DATE_RE = re.compile(r"^\d{14}$", re.ASCII)
# Statuses after which the dossier is closed; 9 (resolved) may still move to 10 (result returned).
_TERMINAL_NEXT: dict[int, frozenset[int]] = {
    3: frozenset(),
    7: frozenset(),
    8: frozenset(),
    9: frozenset({10}),
    10: frozenset(),
}
# The lifecycle order of TrangThaiHoSo (DOMAIN.md §1), by phase: registered online (1), received (2), in
# processing (4, with its two pauses 5 supplement requested and 6 financial obligation, each of which goes back
# to 4 when the applicant answers: 5 → 4 and 6 → 4 are forward moves), closed (3 not accepted, 7 withdrawn,
# 8 stopped, 9 resolved), result returned (10).
_PHASE: dict[int, int] = {1: 0, 2: 1, 4: 2, 5: 2, 6: 2, 3: 3, 7: 3, 8: 3, 9: 3, 10: 4}
_SUPPLEMENT_REQUESTED = 5
_MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1>The upstream answered garbage.</body></html>"

log = logging.getLogger(__name__)


@dataclass
class Knobs:
    """Run-time behaviour of the simulator; every field can be changed while it serves."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: int = 1
    outage: bool = False
    outage_until: float = 0.0
    drop_connection_rate: float = 0.0
    malformed_rate: float = 0.0
    # A lost reply after the effect happened is the case that makes idempotency keys necessary.
    lost_reply_applies: bool = True
    session_ttl_s: float = 1800.0
    success_code_style: str = "int"
    reject_rate: float = 0.0
    reject_dossiers: list[str] = field(default_factory=list)
    # Requests naming one of these dossiers answer 503 (a retryable failure of just those dossiers, while
    # the portal serves every other one): how the fault suite sends chosen dossiers through the retry tiers.
    unavailable_dossiers: list[str] = field(default_factory=list)
    # As a real portal: a create (isUpdating false) of a dossier it has is answered "already exists" (3), an
    # update of one it has not "not found" (4). Off by default: tests written before kept re-creating dossiers.
    strict_existence: bool = False
    # Off: Idempotency-Key headers are ignored, as a portal that never promised to honour them would (the
    # DOMAIN's portal protocol has no such header): what the gateway does about a lost answer must then suffice.
    idempotency_keys: bool = True


_RATE_KNOBS = frozenset({"error_rate", "rate_limit_rate", "drop_connection_rate", "malformed_rate", "reject_rate"})
_KNOB_TYPES: dict[str, Any] = {f.name: type(getattr(Knobs(), f.name)) for f in fields(Knobs)}


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int):
        return value != 0
    raise ValueError(f"not a boolean: {value!r}")


def _coerce_knob(name: str, value: Any) -> Any:
    kind = _KNOB_TYPES[name]
    if kind is bool:
        return _coerce_bool(value)
    if kind is list:
        return knob_strings(name, value)
    if kind is str:
        if name == "success_code_style" and value not in ("int", "str"):
            raise ValueError("success_code_style must be 'int' or 'str'")
        return str(value)
    return knob_number(name, value, fraction=name in _RATE_KNOBS, whole=kind is int)


@dataclass
class _Stats:
    requests: int = 0
    logins: int = 0
    login_failures: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    applied: int = 0
    records_applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    duplicate_effects: int = 0
    identical_snapshots: int = 0
    status_regressions: int = 0
    session_expired: int = 0
    existence_refusals: int = 0
    injected: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("outage", "error", "rate_limit", "drop", "malformed", "reject"), 0)
    )
    in_flight: int = 0
    in_flight_max: int = 0


@dataclass
class _Dossier:
    status: int
    record: dict[str, Any]
    history: list[int] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    ratings: list[dict[str, Any]] = field(default_factory=list)

    def view(self, *, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "TrangThaiHoSo": self.status,
            "record": self.record,
            "history": list(self.history),
            "steps": len(self.steps),
            "ratings": len(self.ratings),
        }
        if detail:
            out["step_records"] = list(self.steps)
            out["rating_records"] = list(self.ratings)
        return out


def _backwards(dossier: _Dossier, status: int) -> bool:
    """Whether moving `dossier` to `status` goes back in its lifecycle: to an earlier phase (_PHASE), out of a
    closed status other than 9 → 10 (_TERMINAL_NEXT), or to a second supplement request (the law allows one, so
    5 once the dossier has left 5 is an old state coming back). Within processing, 4, 5 and 6 alternate."""
    current = dossier.status
    if status == current:
        return False
    allowed = _TERMINAL_NEXT.get(current)
    if allowed is not None and status not in allowed:
        return True
    if _PHASE[status] < _PHASE[current]:
        return True
    return status == _SUPPLEMENT_REQUESTED and _SUPPLEMENT_REQUESTED in dossier.history


class _Rejection(Exception):
    """A business answer with error_code 1 (or `code`); raised before anything is stored."""

    def __init__(self, message: str, code: int = ERROR_REJECTED) -> None:
        super().__init__(message)
        self.code = code


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _small_int(value: Any, low: int, high: int) -> int | None:
    # Real one-stop systems send codes both as numbers and as digit strings; both are accepted.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.strip().isdigit():
        number = int(value)
    else:
        return None
    return number if low <= number <= high else None


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        return False
    # Built by hand: strptime costs several times more and this runs four times per record.
    try:
        datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12]),
            int(value[12:14]),
        )
    except ValueError:
        return False
    return True


def _check_dates(item: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        value = item.get(name)
        if not _is_blank(value) and not _is_date(value):
            raise _Rejection(f"{where}: trường {name} không đúng định dạng yyyyMMddHHmmss")


def _parse_updating(value: Any) -> bool:
    if value is None:
        return False
    try:
        return _coerce_bool(value)
    except ValueError:
        raise _Rejection("Trường isUpdating không hợp lệ") from None


def _items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise _Rejection("Trường data bắt buộc (danh sách không rỗng)")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise _Rejection(f"data[{index}]: phải là đối tượng JSON")
    return data


def _validate_snapshot(record: dict[str, Any], where: str) -> int:
    for name in SNAPSHOT_MANDATORY:
        if _is_blank(record.get(name)):
            raise _Rejection(f"{where}: thiếu trường bắt buộc {name}")
    code = record["MaHoSo"]
    if not isinstance(code, str) or not DOSSIER_CODE_RE.match(code):
        raise _Rejection(f"{where}: trường MaHoSo không đúng định dạng mã hồ sơ")
    status = _small_int(record["TrangThaiHoSo"], 1, 10)
    if status is None:
        raise _Rejection(f"{where}: trường TrangThaiHoSo phải là số nguyên từ 1 đến 10")
    if _small_int(record["HinhThuc"], 1, 3) is None:
        raise _Rejection(f"{where}: trường HinhThuc phải là 1, 2 hoặc 3")
    if _small_int(record["KenhThucHien"], 1, 3) is None:
        raise _Rejection(f"{where}: trường KenhThucHien phải là 1, 2 hoặc 3")
    _check_dates(record, SNAPSHOT_DATES, where)
    _check_index_fields(record, where)
    return status


def _check_flags(item: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name in item and _small_int(item[name], 0, 1) is None:
            raise _Rejection(f"{where}: trường {name} phải là 0 hoặc 1")


def _list_of_objects(record: dict[str, Any], name: str, where: str) -> list[dict[str, Any]]:
    value = record.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _Rejection(f"{where}: trường {name} phải là danh sách đối tượng")
    return value


def _check_index_fields(record: dict[str, Any], where: str) -> None:
    """The fields the national index reads: identities, flags, payment, databases, documents, fees."""
    identities = _list_of_objects(record, "DinhDanhCHS", where)
    for i, identity in enumerate(identities):
        if _small_int(identity.get("LoaiDinhDanh"), 1, 4) is None or _is_blank(identity.get("SoDinhDanh")):
            raise _Rejection(f"{where}: DinhDanhCHS[{i}] cần LoaiDinhDanh (1-4) và SoDinhDanh")
    _check_flags(record, SNAPSHOT_FLAGS, where)
    if "DuocThanhToanTrucTuyen" in record and _small_int(record["DuocThanhToanTrucTuyen"], 0, 2) is None:
        raise _Rejection(f"{where}: trường DuocThanhToanTrucTuyen phải là 0, 1 hoặc 2")
    for i, database in enumerate(_list_of_objects(record, "DSKetNoiCSDL", where)):
        if _is_blank(database.get("MaCSDL")):
            raise _Rejection(f"{where}: DSKetNoiCSDL[{i}] thiếu MaCSDL")
    for i, doc in enumerate(_list_of_objects(record, "TaiLieuNop", where)):
        place = f"{where}: TaiLieuNop[{i}]"
        _check_flags(doc, DOCUMENT_FLAGS, place)
        url = doc.get("DuongDanTaiTepTin")
        if not _is_blank(url) and not (isinstance(url, str) and _URL_RE.match(url)):
            raise _Rejection(f"{place}: trường DuongDanTaiTepTin phải là đường dẫn http(s)")
        # Ours: a digitised document the portal cannot download is not digitised for anyone reading the record.
        if _small_int(doc.get("DuocSoHoa"), 1, 1) == 1 and _is_blank(url):
            raise _Rejection(f"{place}: tài liệu đã số hóa cần DuongDanTaiTepTin")
    for i, fee in enumerate(_list_of_objects(record, "DanhSachLePhi", where)):
        place = f"{where}: DanhSachLePhi[{i}]"
        if "HinhThucThu" in fee and _small_int(fee["HinhThucThu"], 1, 3) is None:
            raise _Rejection(f"{place}: trường HinhThucThu phải là 1, 2 hoặc 3")
        if "LoaiPhiLePhi" in fee and _small_int(fee["LoaiPhiLePhi"], 1, 2) is None:
            raise _Rejection(f"{place}: trường LoaiPhiLePhi phải là 1 hoặc 2")


class PortalSimulator(Simulator):
    """In-memory national portal: sessions, dossier snapshots, steps, ratings, idempotency, fault knobs."""

    knob_names = _KNOB_TYPES
    _coerce_knob = staticmethod(_coerce_knob)

    def __init__(
        self,
        *,
        username: str = "gateway",
        password: str = "secret",  # noqa: S107 - a simulator's well-known test credential
        dstcode: str = "H34",
        seed: int | None = None,
        idempotency_capacity: int = 1_000_000,
        **knobs: Any,
    ) -> None:
        self._username = username
        self._password = password
        self._dstcode = dstcode
        self._rng = random.Random(seed)
        self._idempotency_capacity = idempotency_capacity
        self._knobs = Knobs()
        self._reject_set: frozenset[str] = frozenset()
        self.set_knobs(**knobs)
        self._sessions: dict[str, float] = {}
        self._logins_since_prune = 0
        self._dossiers: dict[str, _Dossier] = {}
        self._idempotency: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._last_effect: dict[tuple[str, str], dict[str, Any]] = {}
        self._applied_appends: set[bytes] = set()
        self.effects: list[tuple[str, str]] = []
        self._stats = _Stats()
        super().__init__(self._build_app())

    # ----- public API -------------------------------------------------------------------------

    @property
    def knobs(self) -> dict[str, Any]:
        return asdict(self._knobs)

    def _set_knob(self, name: str, value: Any) -> None:
        setattr(self._knobs, name, value)
        if name == "reject_dossiers":
            self._reject_set = frozenset(value)

    @property
    def dossiers(self) -> dict[str, dict[str, Any]]:
        return {code: d.view() for code, d in self._dossiers.items()}

    def dossier(self, code: str) -> dict[str, Any] | None:
        found = self._dossiers.get(code)
        return found.view(detail=True) if found is not None else None

    @property
    def stats(self) -> dict[str, Any]:
        out = asdict(self._stats)
        out["dossiers"] = len(self._dossiers)
        out["sessions"] = len(self._sessions)
        return out

    def reset(self) -> None:
        """Forget dossiers, idempotency keys and counters; knobs and sessions survive so a client keeps going."""
        in_flight = self._stats.in_flight
        self._dossiers.clear()
        self._idempotency.clear()
        self._last_effect.clear()
        self._applied_appends.clear()
        self.effects.clear()
        self._stats = _Stats(in_flight=in_flight, in_flight_max=in_flight)

    # ----- HTTP plumbing ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(LOGIN_PATH, self._handle_login)
        app.router.add_post(SERVICE_PATH, self._handle_service)
        app.router.add_get(DOSSIERS_PATH, self._get_dossiers)
        app.router.add_get(DOSSIER_PATH, self._get_dossier)
        app.router.add_post(RESET_PATH, self._post_reset)
        return app

    @staticmethod
    def _raw(status: int, body: bytes) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")

    def _ok_code(self) -> int | str:
        return "00" if self._knobs.success_code_style == "str" else 0

    def _inject(self, kind: str) -> None:
        self._stats.injected[kind] += 1

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _unavailable(self) -> web.Response:
        return self._json({"error_code": 503, "message": "Service Unavailable"}, status=503)

    def _drop(self, request: web.Request) -> web.Response:
        self._inject("drop")
        # aiohttp swallows the write to a closed transport, so the client just sees the connection die.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=200)

    def _malformed(self) -> web.Response:
        self._inject("malformed")
        return web.Response(body=_MALFORMED_BODY, status=200, content_type="text/html")

    async def _api(self, request: web.Request, login: bool) -> web.Response:
        stats = self._stats
        stats.requests += 1
        stats.in_flight += 1
        if stats.in_flight > stats.in_flight_max:
            stats.in_flight_max = stats.in_flight
        try:
            k = self._knobs
            # An outage answers at once, like a load balancer with no healthy backend.
            if k.outage or (k.outage_until and time.time() < k.outage_until):
                self._inject("outage")
                return self._unavailable()
            delay = k.latency_ms + (self._rng.uniform(0, k.latency_jitter_ms) if k.latency_jitter_ms else 0)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            if self._hit(k.error_rate):
                self._inject("error")
                return self._unavailable()
            if self._hit(k.rate_limit_rate):
                self._inject("rate_limit")
                resp = self._json({"error_code": 429, "message": "Too Many Requests"}, status=429)
                resp.headers["Retry-After"] = str(k.retry_after_s)
                return resp
            lost_reply = None
            if self._hit(k.drop_connection_rate):
                lost_reply = "drop"
            elif self._hit(k.malformed_rate):
                lost_reply = "malformed"
            if lost_reply is not None and not k.lost_reply_applies:
                return self._drop(request) if lost_reply == "drop" else self._malformed()
            body = await request.read()
            if k.unavailable_dossiers and any(code.encode() in body for code in k.unavailable_dossiers):
                self._inject("error")
                return self._unavailable()
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                payload = None
            if not isinstance(payload, dict):
                return self._json({"error_code": ERROR_REJECTED, "message": "Body must be a JSON object"}, 400)
            if login:
                status, body = 200, self._login(request, payload)
            else:
                status, body = self._service(request, payload)
            if lost_reply is not None:
                return self._drop(request) if lost_reply == "drop" else self._malformed()
            return self._raw(status, body)
        finally:
            stats.in_flight -= 1

    async def _handle_login(self, request: web.Request) -> web.Response:
        return await self._api(request, login=True)

    async def _handle_service(self, request: web.Request) -> web.Response:
        return await self._api(request, login=False)

    # ----- protocol ---------------------------------------------------------------------------

    def _encode(self, obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode()

    def _login(self, request: web.Request, payload: dict[str, Any]) -> bytes:
        if (
            request.headers.get(DSTCODE_HEADER) != self._dstcode
            or payload.get("username") != self._username
            or payload.get("password") != self._password
        ):
            self._stats.login_failures += 1
            return self._encode({"error_code": ERROR_REJECTED, "message": MSG_BAD_LOGIN})
        self._stats.logins += 1
        now = time.monotonic()
        self._logins_since_prune += 1
        if self._logins_since_prune >= 1000:
            self._logins_since_prune = 0
            ttl = self._knobs.session_ttl_s
            self._sessions = {t: c for t, c in self._sessions.items() if now - c < ttl}
        token = secrets.token_hex(16)
        self._sessions[token] = now
        return self._encode({"error_code": self._ok_code(), "session": token})

    def _session_error(self, token: Any) -> str | None:
        created = self._sessions.get(token) if isinstance(token, str) else None
        if created is None:
            return MSG_SESSION_INVALID
        # Expiry is computed against the current TTL so tests can shorten it on a live session.
        if time.monotonic() - created >= self._knobs.session_ttl_s:
            del self._sessions[token]
            self._stats.session_expired += 1
            return MSG_SESSION_EXPIRED
        return None

    def _service(self, request: web.Request, payload: dict[str, Any]) -> tuple[int, bytes]:
        service = payload.get("service")
        name = service if isinstance(service, str) and service in SERVICES else "<unknown>"
        self._stats.calls[name] = self._stats.calls.get(name, 0) + 1
        session_error = self._session_error(payload.get("session"))
        if session_error is not None:
            # Not remembered under the idempotency key: the client retries the same key after logging in.
            return 200, self._encode({"error_code": ERROR_SESSION, "message": session_error})
        key = request.headers.get(IDEMPOTENCY_HEADER) if self._knobs.idempotency_keys else None
        if key:
            stored = self._idempotency.get(key)
            if stored is not None:
                self._stats.duplicates += 1
                return stored
        try:
            if _is_blank(payload.get("madonvi")):
                raise _Rejection("Trường madonvi bắt buộc")
            if service == SERVICE_SNAPSHOT:
                answer = self._snapshot(payload)
            elif service == SERVICE_STEP:
                answer = self._step(payload)
            elif service == SERVICE_RATING:
                answer = self._rating(payload)
            elif service == SERVICE_LOOKUP:
                answer = self._lookup(payload)
            else:
                raise _Rejection("Dịch vụ (service) không được hỗ trợ")
            # Every applied request in order, by dossier(s) and idempotency key: per-dossier order and "one
            # effect per key" at the partner are read off this (tests/faults/).
            if service != SERVICE_LOOKUP:
                codes = ",".join(dict.fromkeys(str(item.get("MaHoSo")) for item in _items(payload)))
                self.effects.append((codes, key or ""))
        except _Rejection as exc:
            self._stats.rejected += 1
            log.debug("portal rejected %s: %s", name, exc)
            answer = {"error_code": exc.code, "message": str(exc)}
        result = (200, self._encode(answer))
        if key:
            self._idempotency[key] = result
            if len(self._idempotency) > self._idempotency_capacity:
                self._idempotency.popitem(last=False)
        return result

    def _business_gate(self, codes: list[str]) -> None:
        for code in codes:
            if code in self._reject_set:
                self._inject("reject")
                raise _Rejection(f"{MSG_BUSINESS_REJECTION}: {code}")
        if self._hit(self._knobs.reject_rate):
            self._inject("reject")
            raise _Rejection(MSG_BUSINESS_REJECTION)

    def _note_effect(self, service: str, code: str, item: dict[str, Any]) -> None:
        # A snapshot is an upsert: sending the same one twice changes nothing, so it is only noted. Steps and
        # ratings are appends: the same one applied twice is a second effect the gateway should have avoided.
        if service == SERVICE_SNAPSHOT:
            effect_key = (service, code)
            if self._last_effect.get(effect_key) == item:  # deep equality ignores key order, as JSON does
                self._stats.identical_snapshots += 1
            self._last_effect[effect_key] = item
        else:
            fingerprint = hashlib.sha256(
                f"{service}\n{json.dumps(item, sort_keys=True, ensure_ascii=False, default=str)}".encode()
            ).digest()
            if fingerprint in self._applied_appends:
                self._stats.duplicate_effects += 1
            self._applied_appends.add(fingerprint)
        self._stats.records_applied += 1

    def _known(self, item: dict[str, Any], where: str) -> _Dossier:
        code = item.get("MaHoSo")
        if _is_blank(code):
            raise _Rejection(f"{where}: thiếu trường bắt buộc MaHoSo")
        found = self._dossiers.get(code) if isinstance(code, str) else None
        if found is None:
            raise _Rejection(f"{where}: MaHoSo {code} không tồn tại (chưa đồng bộ hồ sơ)")
        return found

    def _snapshot(self, payload: dict[str, Any]) -> dict[str, Any]:
        updating = _parse_updating(payload.get("isUpdating"))
        records = _items(payload)
        statuses = [_validate_snapshot(r, f"data[{i}]") for i, r in enumerate(records)]
        self._business_gate([r["MaHoSo"] for r in records])
        if self._knobs.strict_existence:
            for named in (r["MaHoSo"] for r in records):
                if not updating and named in self._dossiers:
                    self._stats.existence_refusals += 1
                    raise _Rejection(f"{MSG_EXISTS}: {named}", ERROR_EXISTS)
                if updating and named not in self._dossiers:
                    self._stats.existence_refusals += 1
                    raise _Rejection(f"{MSG_NOT_FOUND}: {named}", ERROR_NOT_FOUND)
        result = []
        for record, status in zip(records, statuses, strict=True):
            code: str = record["MaHoSo"]
            dossier = self._dossiers.get(code)
            if dossier is None:
                dossier = self._dossiers[code] = _Dossier(status=status, record=record)
            else:
                if _backwards(dossier, status):
                    # Applied anyway, like the portal; counted because the gateway must never go backwards.
                    self._stats.status_regressions += 1
                dossier.status = status
                dossier.record = record
            dossier.history.append(status)
            self._note_effect(SERVICE_SNAPSHOT, code, record)
            result.append({"MaHoSo": code, "TrangThaiHoSo": status})
            log.debug("portal applied snapshot %s status %s", code, status)
        self._stats.applied += 1
        return {"error_code": self._ok_code(), "message": MSG_SUCCESS, "result": result}

    def _step(self, payload: dict[str, Any]) -> dict[str, Any]:
        steps = _items(payload)
        targets = []
        for index, step in enumerate(steps):
            where = f"data[{index}]"
            targets.append(self._known(step, where))
            _check_dates(step, STEP_DATES, where)
        self._business_gate([s["MaHoSo"] for s in steps])
        result = []
        for step, dossier in zip(steps, targets, strict=True):
            dossier.steps.append(step)
            self._note_effect(SERVICE_STEP, step["MaHoSo"], step)
            result.append({"MaHoSo": step["MaHoSo"], "TrangThaiHoSo": dossier.status})
        self._stats.applied += 1
        return {"error_code": self._ok_code(), "message": MSG_SUCCESS, "result": result}

    def _rating(self, payload: dict[str, Any]) -> dict[str, Any]:
        ratings = _items(payload)
        targets = []
        for index, rating in enumerate(ratings):
            where = f"data[{index}]"
            targets.append(self._known(rating, where))
            if _small_int(rating.get("MucDoHaiLong"), 1, 4) is None:
                raise _Rejection(f"{where}: trường MucDoHaiLong phải là số nguyên từ 1 đến 4")
            _check_dates(rating, RATING_DATES, where)
        self._business_gate([r["MaHoSo"] for r in ratings])
        result = []
        for rating, dossier in zip(ratings, targets, strict=True):
            dossier.ratings.append(rating)
            self._note_effect(SERVICE_RATING, rating["MaHoSo"], rating)
            result.append({"MaHoSo": rating["MaHoSo"], "TrangThaiHoSo": dossier.status})
        self._stats.applied += 1
        return {"error_code": self._ok_code(), "message": MSG_SUCCESS, "result": result}

    def _lookup(self, payload: dict[str, Any]) -> dict[str, Any]:
        code = payload.get("MaHoSo")
        if _is_blank(code) or not isinstance(code, str):
            raise _Rejection("Thiếu trường bắt buộc MaHoSo")
        found = self._dossiers.get(code)
        if found is None:
            return {"error_code": self._ok_code(), "message": MSG_NOT_FOUND, "result": []}
        return {
            "error_code": self._ok_code(),
            "message": MSG_SUCCESS,
            "result": [{"MaHoSo": code, "TrangThaiHoSo": found.status}],
        }

    # ----- inspection endpoints ---------------------------------------------------------------

    async def _get_dossiers(self, request: web.Request) -> web.Response:
        return self._json(self.dossiers)

    async def _get_dossier(self, request: web.Request) -> web.Response:
        found = self.dossier(request.match_info["code"])
        if found is None:
            return self._json({"error": "not found"}, status=404)
        return self._json(found)

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return self._json({"reset": True})


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, _KNOB_TYPES)
    parser.add_argument("--username", default="gateway")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--dstcode", default="H34")
    return parser.parse_args(argv)


def _build(args: argparse.Namespace) -> PortalSimulator:
    return PortalSimulator(
        username=args.username,
        password=args.password,
        dstcode=args.dstcode,
        seed=args.seed,
        **knob_arguments(args, _KNOB_TYPES),
    )


def main(argv: list[str] | None = None) -> None:
    run(_parse_args(argv), _build)


if __name__ == "__main__":
    main()
