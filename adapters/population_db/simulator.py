"""Simulator of the national population database behind the exchange platform (contracts/population/population.v1
.wsdl, a contract of ours): a real aiohttp SOAP server over a generated synthetic population (no real people).

It does what the contract says: it parses each request with a hardened parser of its own (no DTD, no entities, no
network, bounded size and depth), validates the operation's element against the XSD, checks the platform's Basic
digest (`username:SHA256(url + username + Timestamp + secret)`, the timestamp within `clock_skew_s`), and answers
XacThucThongTinCongDan (verdict only) or TraCuuThongTinCongDan (verdict and the record) from its population. The
same MaYeuCau is counted once in `stats["distinct_requests"]`, so a test sees retries as the same request.

Faults and knobs (attributes, also settable over HTTP and the CLI): `latency_s` (every answer), `slow_rate` and
`slow_s` (that share of answers that much slower); `error_rate` (Server fault LOI_HE_THONG); `outage` (HTTP 503,
not SOAP); `quota_per_s` (more calls than that in one second: Server fault QUA_HAN_MUC; 0: no quota);
`quota_next` (that many QUA_HAN_MUC faults now); `refuse_agencies` (Client fault KHONG_DUOC_PHEP for those
MaDonVi); `unavailable_agencies` (HTTP 503 for those MaDonVi: an outage as one agency's requests see it);
`malformed_next` (answers that are not XML); `hostile_next` (the next answer carries `xxe`, `billion_laughs`,
`external_dtd` or `deep`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import functools
import hashlib
import random
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import xmlschema
from aiohttp import web
from lxml import etree

from adapters.population_db.synthetic import Citizen, Place, population
from gateway.simulation import Simulator, argument_parser, knob_arguments, knob_bool, knob_number, knob_strings, run

NS: Final = "http://dancuquocgia.bca"
SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
CONTRACTS: Final = Path(__file__).resolve().parents[2] / "contracts" / "population"
XSD_PATH: Final = CONTRACTS / "population.v1.xsd"
SERVICE_PATH: Final = "/dancuquocgia/v1"
DTD_PATH: Final = "/_sim/external.dtd"
TIMINGS_PATH: Final = "/_sim/timings"
_MAX_TIMINGS: Final = 200_000
LOOKUP: Final = "TraCuuThongTinCongDan"
VERIFY: Final = "XacThucThongTinCongDan"
MAX_REQUEST_BYTES: Final = 256 * 1024
MAX_REQUEST_DEPTH: Final = 32
HOSTILE_KINDS: Final = ("xxe", "billion_laughs", "external_dtd", "deep")
_MALFORMED_BODY: Final = b"<html><body><h1>502 Bad Gateway</h1><p>garbage<br></body></html>"
_OUTAGE_BODY: Final = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
_MA_YEU_CAU: Final = re.compile(r"(<tns:MaYeuCau>)([^<]*)(</tns:MaYeuCau>)")

KNOBS: Final[Mapping[str, str]] = {
    "latency_s": "seconds",
    "slow_rate": "rate",
    "slow_s": "seconds",
    "error_rate": "rate",
    "outage": "bool",
    "quota_per_s": "count",
    "quota_next": "count",
    "refuse_agencies": "set",
    "unavailable_agencies": "set",
    "malformed_next": "count",
    "hostile_next": "hostile?",
}


def _coerce_knob(name: str, value: Any) -> Any:
    kind = KNOBS[name]
    if kind == "hostile?":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        if value not in HOSTILE_KINDS:
            raise ValueError(f"{name} must be one of {list(HOSTILE_KINDS)} or null")
        return value
    if kind == "bool":
        return knob_bool(name, value)
    if kind == "set":
        return set(knob_strings(name, value))
    return knob_number(name, value, fraction=kind == "rate", whole=kind == "count")


@functools.cache
def contract_schema() -> Any:
    return xmlschema.XMLSchema(str(XSD_PATH))


def hardened_parser() -> Any:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _depth(root: Any) -> int:
    deepest = depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    return deepest


class _Fault(Exception):
    def __init__(self, code: str, detail_code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.detail_code, self.message = code, detail_code, message


class PopulationSimulator(Simulator):
    """The population database over `size` synthetic citizens (seeded); knobs in the module docstring."""

    knob_names = KNOBS
    _coerce_knob = staticmethod(_coerce_knob)

    def __init__(
        self,
        *,
        size: int = 2000,
        seed: int = 1,
        username: str = "gateway",
        secret: str = "ndxp-secret",  # noqa: S107 - a simulator's well-known test credential
        clock_skew_s: float = 300.0,
        **knobs: Any,
    ) -> None:
        super().__init__(self._build_app())
        self.citizens: dict[str, Citizen] = population(size, seed=seed)
        self._username = username
        self._secret = secret
        self._skew = clock_skew_s
        self._rng = random.Random(seed)
        self.latency_s = 0.0
        self.slow_rate = 0.0
        self.slow_s = 0.0
        self.error_rate = 0.0
        self.outage = False
        self.quota_per_s = 0
        self.quota_next = 0
        self.refuse_agencies: set[str] = set()
        self.unavailable_agencies: set[str] = set()
        self.malformed_next = 0
        self.hostile_next: str | None = None
        self.dtd_fetches = 0
        self.set_knobs(**knobs)
        self.reset()

    def reset(self) -> None:
        """Forget every counter (knobs and the population stay)."""
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.seen_ids: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()  # MaYeuCau answered with a verdict
        self.officers: collections.Counter[str] = collections.Counter()
        self._window: collections.deque[float] = collections.deque()
        self.in_flight = 0
        self.max_in_flight = 0
        # MaYeuCau → milliseconds from the request's arrival to the answer's hand-off (the partner's own latency).
        self.service_ms: dict[str, float] = {}

    @property
    def endpoint_url(self) -> str:
        return self.base_url + SERVICE_PATH

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "faults": dict(self.faults), "injected": dict(self.injected),
            "distinct_requests": len(self.seen_ids), "repeated_requests": sum(n - 1 for n in self.seen_ids.values()),
            "answered": len(self.answered),
            "max_in_flight": self.max_in_flight, "dtd_fetches": self.dtd_fetches,
        }

    def some(self, n: int) -> list[Citizen]:
        """The first `n` citizens (a stable sample for tests and the demo)."""
        return list(self.citizens.values())[:n]

    # ----- the service ------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post(SERVICE_PATH, self._serve)
        app.router.add_get(DTD_PATH, self._external_dtd)
        app.router.add_get(TIMINGS_PATH, self._timings)
        return app

    async def _timings(self, request: web.Request) -> web.Response:
        """The partner's own latency per request id (benchmarks subtract it from end-to-end times)."""
        return self._json(self.service_ms)

    def _authenticate(self, request: web.Request) -> None:
        failed = _Fault("soapenv:Client", "KHONG_XAC_THUC", "Xác thực không thành công")
        header = request.headers.get("Authorization", "")
        stamp = request.headers.get("Timestamp", "")
        if not header.startswith("Basic ") or not stamp.isdigit():
            raise failed
        try:
            user, _, given = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise failed from None
        if abs(time.time() - int(stamp) / 1000) > self._skew:
            raise failed
        expected = hashlib.sha256(f"{self.endpoint_url}{user}{stamp}{self._secret}".encode()).hexdigest()
        if not (secrets.compare_digest(user.encode(), self._username.encode())
                and secrets.compare_digest(given.encode(), expected.encode())):
            raise failed

    def _read(self, raw: bytes) -> tuple[str, Any]:
        try:
            root = etree.fromstring(raw, hardened_parser())
        except etree.XMLSyntaxError:
            raise _Fault("soapenv:Client", "DU_LIEU_KHONG_HOP_LE", "Yêu cầu không phải XML hợp lệ") from None
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None or _depth(root) > MAX_REQUEST_DEPTH:
            raise _Fault("soapenv:Client", "DU_LIEU_KHONG_HOP_LE", "Yêu cầu có DTD hoặc lồng quá sâu")
        body = root.find(f"{{{SOAP_ENV}}}Body")
        children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
        if len(children) != 1 or etree.QName(children[0]).localname not in (LOOKUP, VERIFY):
            raise _Fault("soapenv:Client", "DU_LIEU_KHONG_HOP_LE", "Body phải chứa đúng một thao tác")
        element = children[0]
        error = next(iter(contract_schema().iter_errors(element)), None)
        if error is not None:
            raise _Fault("soapenv:Client", "DU_LIEU_KHONG_HOP_LE", f"Yêu cầu không hợp lệ theo XSD: {error.reason}")
        return etree.QName(element).localname, element

    def _over_quota(self) -> bool:
        if self.quota_next > 0:
            self.quota_next -= 1
            return True
        if self.quota_per_s <= 0:
            return False
        now = time.monotonic()
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= self.quota_per_s:
            return True
        self._window.append(now)
        return False

    def _verdict(self, element: Any) -> tuple[str, list[str], Citizen | None]:
        number = element.findtext(_q("SoDinhDanh")) or ""
        citizen = self.citizens.get(number)
        if citizen is None:
            return "KHONG_TIM_THAY", [], None
        differs = []
        if (element.findtext(_q("HoVaTen")) or "") != citizen.full_name:
            differs.append("HoVaTen")
        birth = element.findtext(_q("NgayThangNamSinh")) or ""
        if birth not in (citizen.birth.strftime("%Y%m%d"), f"{citizen.birth.year:04d}"):
            differs.append("NgayThangNamSinh")
        return ("KHONG_KHOP" if differs else "KHOP"), differs, citizen

    def _answer(self, operation: str, element: Any) -> Any:
        status, differs, citizen = self._verdict(element)
        answer = etree.Element(_q(f"{operation}Response"), nsmap={"tns": NS})
        etree.SubElement(answer, _q("MaYeuCau")).text = element.findtext(_q("MaYeuCau"))
        holder = answer if operation == LOOKUP else etree.SubElement(answer, _q("KetQuaXacThuc"))
        etree.SubElement(holder, _q("TrangThai")).text = status
        for name in differs:
            etree.SubElement(holder, _q("TruongKhongKhop")).text = name
        if operation == LOOKUP and citizen is not None:
            answer.append(self._record(citizen))
        return answer

    @staticmethod
    def _record(c: Citizen) -> Any:
        record = etree.Element(_q("CongDan"))
        etree.SubElement(record, _q("SoDinhDanh")).text = c.id_number
        name = etree.SubElement(record, _q("HoVaTen"))
        for tag, value in (("Ho", c.family), ("ChuDem", c.middle), ("Ten", c.given)):
            etree.SubElement(name, _q(tag)).text = value
        etree.SubElement(record, _q("GioiTinh")).text = c.gender
        etree.SubElement(record, _q("NgayThangNamSinh")).text = c.birth.strftime("%Y%m%d")
        etree.SubElement(record, _q("QuocTich")).text = c.nationality
        for tag, place in (("ThuongTru", c.permanent), ("NoiOHienTai", c.current), ("QueQuan", c.hometown)):
            record.append(PopulationSimulator._place(tag, place))
        return record

    @staticmethod
    def _place(tag: str, place: Place) -> Any:
        element = etree.Element(_q(tag))
        for name, value in (("MaTinhThanh", place.province), ("MaQuanHuyen", place.district),
                            ("MaPhuongXa", place.ward), ("ChiTiet", place.detail)):
            etree.SubElement(element, _q(name)).text = value
        return element

    @staticmethod
    def _envelope(child: Any) -> bytes:
        envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, "tns": NS})
        etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(child)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    def _fault(self, fault: _Fault) -> web.Response:
        self.faults[fault.detail_code] += 1
        element = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soapenv": SOAP_ENV})
        etree.SubElement(element, "faultcode").text = fault.code
        etree.SubElement(element, "faultstring").text = fault.message
        error = etree.SubElement(etree.SubElement(element, "detail"), _q("LoiDichVu"), nsmap={"tns": NS})
        etree.SubElement(error, _q("MaLoi")).text = fault.detail_code
        etree.SubElement(error, _q("MoTa")).text = fault.message
        return self._xml(self._envelope(element), 500)

    @staticmethod
    def _xml(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.perf_counter()
        rid: list[str] = []  # the request's MaYeuCau, once read
        try:
            response = await self._handle(request, rid)
        finally:
            self.in_flight -= 1
        if rid and len(self.service_ms) < _MAX_TIMINGS:
            self.service_ms[rid[0]] = round(1000 * (time.perf_counter() - started), 3)
        return response

    async def _handle(self, request: web.Request, rid: list[str]) -> web.StreamResponse:
        raw = await request.read()
        if self.outage:
            self.injected["outage"] += 1
            return web.Response(body=_OUTAGE_BODY, status=503, content_type="text/html")
        delay = self.latency_s + (self.slow_s if self.slow_rate and self._rng.random() < self.slow_rate else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            self._authenticate(request)
        except _Fault:
            # The platform refuses at its door, before any SOAP: 401 (the gateway's credentials, not the request).
            self.faults["unauthenticated"] += 1
            return web.Response(status=401, text="unauthenticated", headers={"WWW-Authenticate": "Basic"})
        try:
            operation, element = self._read(raw)
            self.requests[operation] += 1
            if (element.findtext(_q("MaDonVi")) or "") in self.unavailable_agencies:
                self.injected["unavailable"] += 1
                return web.Response(body=_OUTAGE_BODY, status=503, content_type="text/html")
            rid.append(element.findtext(_q("MaYeuCau")) or "")
            self.seen_ids[rid[0]] += 1
            self.officers[element.findtext(_q("MaCanBo")) or ""] += 1
            if self.error_rate > 0 and self._rng.random() < self.error_rate:
                self.injected["error"] += 1
                raise _Fault("soapenv:Server", "LOI_HE_THONG", "Lỗi hệ thống, thử lại sau")
            if self._over_quota():
                raise _Fault("soapenv:Server", "QUA_HAN_MUC", "Vượt hạn mức truy vấn, thử lại sau")
            if (element.findtext(_q("MaDonVi")) or "") in self.refuse_agencies:
                raise _Fault("soapenv:Client", "KHONG_DUOC_PHEP", "Đơn vị không được phép tra cứu")
            body = self._envelope(self._answer(operation, element))
            self.answered[rid[0]] += 1
        except _Fault as fault:
            return self._fault(fault)
        if self.malformed_next > 0:
            self.malformed_next -= 1
            self.injected["malformed"] += 1
            return web.Response(body=_MALFORMED_BODY, status=200, content_type="text/html")
        kind, self.hostile_next = self.hostile_next, None
        if kind is not None:
            self.injected[kind] += 1
            return self._xml(self._hostile(kind, body))
        return self._xml(body)

    def _hostile(self, kind: str, body: bytes) -> bytes:
        """The answer with a hostile payload in its MaYeuCau."""
        doctypes = {
            "xxe": '<!DOCTYPE soapenv:Envelope [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>',
            "billion_laughs": "<!DOCTYPE soapenv:Envelope [\n  <!ENTITY lol0 \"lol\">\n"
            + "".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10)) + "]>",
            "external_dtd": f'<!DOCTYPE soapenv:Envelope SYSTEM "{self.base_url}{DTD_PATH}">',
            "deep": "",
        }
        payloads = {"xxe": "&xxe;", "billion_laughs": "&lol9;", "external_dtd": "&ext;",
                    "deep": "<x>" * 300 + "</x>" * 300}
        text = body.decode("utf-8").split("?>", 1)[1].lstrip()
        text = _MA_YEU_CAU.sub(lambda m: m.group(1) + payloads[kind] + m.group(3), text, count=1)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctypes[kind]}\n{text}'.encode()

    async def _external_dtd(self, request: web.Request) -> web.Response:
        self.dtd_fetches += 1
        return web.Response(body=b'<!ENTITY ext SYSTEM "file:///etc/hostname">\n', content_type="application/xml-dtd")


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, KNOBS)
    parser.add_argument("--size", type=int, default=2000, help="citizens in the synthetic population")
    parser.add_argument("--username", default="gateway")
    parser.add_argument("--secret", default="ndxp-secret")
    return parser.parse_args(None if argv is None else list(argv))


def _build(args: argparse.Namespace) -> PopulationSimulator:
    return PopulationSimulator(size=args.size, seed=args.seed if args.seed is not None else 1,
                               username=args.username, secret=args.secret, **knob_arguments(args, KNOBS))


def main(argv: Iterable[str] | None = None) -> None:
    run(_parse_args(argv), _build)


if __name__ == "__main__":
    main()
