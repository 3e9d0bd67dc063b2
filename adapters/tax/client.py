"""SOAP client of the tax office's interconnect: submit the signed transfer form, fetch notices and vouchers.

Built on gateway/soap (zeep over one pooled aiohttp session, the hardened parser, WS-Security UsernameToken,
XML-DSig). Raises only gateway.errors classes; never retries (the pipeline and the follow-ups do).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from lxml import etree

from adapters.tax import mapping
from adapters.tax.settings import TaxSettings
from gateway.errors import PartnerRejected
from gateway.soap.client import bind, build_client
from gateway.soap.faults import soap_errors
from gateway.soap.plugins import KeepReplies, SignElement, kept_replies
from gateway.soap.security import username_token
from gateway.soap.signing import SigningMaterial, load_signing_material, verify
from gateway.soap.transport import SoapTransport, record_exchanges

# Matches the dossier-code pattern of the XSD; agency 000.00.00.A00 and sequence 0000 are issued to no one.
PROBE_DOSSIER = "000.00.00.A00-000101-0000"


@dataclass(frozen=True, slots=True)
class Sent:
    """A call's answer and the hashes of what went over the wire (for the ledger; never the bodies)."""

    answer: Any
    request_sha256: str
    response_sha256: str


class TaxClient:
    """One tax-office account: a zeep client on the local WSDL, our signing key, the office's certificate."""

    def __init__(self, settings: TaxSettings) -> None:
        self._settings = settings
        self._transport: SoapTransport | None = None
        self._service: Any = None
        self._material: SigningMaterial | None = None

    async def start(self) -> None:
        s = self._settings
        self._material = load_signing_material(
            s.signing_key_path, s.signing_cert_path,
            key_password=s.signing_key_password,
        )
        self._transport = SoapTransport(
            contracts_dir=s.wsdl_path.parent, timeout_s=s.timeout_s, max_connections=s.max_connections,
            max_response_bytes=s.max_response_bytes, max_depth=s.max_xml_depth,
        )
        client = build_client(
            s.wsdl_path, self._transport, wsse=username_token(s.username, s.password, use_digest=s.use_digest),
            plugins=(SignElement(mapping.FORM, frozenset({mapping.SUBMIT}), self._signing), KeepReplies()),
        )
        self._service = bind(client, s.base_url)
        await self._transport.start()

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()

    def _signing(self) -> SigningMaterial:
        if self._material is None:
            raise RuntimeError("TaxClient used before start()")
        return self._material

    async def _call(self, operation: str, known: Collection[str] = (), **fields: Any) -> tuple[Sent, list[Any]]:
        if self._service is None:
            raise RuntimeError("TaxClient used before start()")
        with record_exchanges() as wire, kept_replies() as replies, soap_errors(operation, known=known):
            answer = await getattr(self._service, operation)(**fields)
        last = wire[-1] if wire else None
        return Sent(answer, last.request_sha256 if last else "", last.response_sha256 or "" if last else ""), replies

    async def probe(self) -> str:
        """`gateway check`: an authenticated read (LayThongBaoThue) of a dossier code no agency issues. The office
        answering at all, even "no such dossier", proves the network, TLS and the WS-Security account; a refused
        token or an unreachable endpoint raises PartnerUnavailable."""
        try:
            await self._call(mapping.NOTICES, MaHoSo=PROBE_DOSSIER)
        except PartnerRejected as exc:  # e.g. "SOAP fault Client: HO_SO_KHONG_TON_TAI ..."
            return f"authenticated; a probe dossier refused as expected ({exc.reason})"
        return "authenticated; notices read for a probe dossier"

    async def submit(self, form: dict[str, Any], *, dossier_code: str, request_id: str,
                     known: Collection[str] = ()) -> Sent:
        """GuiThongTinNghiaVuTaiChinh: the form, signed on the way out; the same request_id answers the same
        receipt however often it is sent."""
        sent, _ = await self._call(mapping.SUBMIT, known, MaHoSo=dossier_code, MaYeuCau=request_id,
                                   PhieuChuyenThongTin=form)
        return sent

    async def notices(self, dossier_code: str) -> tuple[Sent, list[mapping.Notice]]:
        """LayThongBaoThue: every notice of the dossier, each verified against the tax office's certificate and
        read from what its signature covers only (SignatureMissing / SignatureInvalid otherwise)."""
        sent, replies = await self._call(mapping.NOTICES, MaHoSo=dossier_code)
        found: list[mapping.Notice] = []
        for reply in replies[-1:]:
            for element in reply.iter(mapping.NOTICE):
                verified = verify(etree.tostring(element), trusted_cert_pem=self._settings.tax_office_cert_pem,
                                  max_bytes=self._settings.max_response_bytes, max_depth=self._settings.max_xml_depth)
                found.append(mapping.notice(verified.element, verified.cert_sha256))
        return sent, found

    async def voucher(self, dossier_code: str, notice_id: str) -> tuple[Sent, mapping.Voucher | None]:
        """LayChungTuNopTien: the payment voucher of a notice, or None while it is not paid."""
        sent, _ = await self._call(mapping.VOUCHER, MaHoSo=dossier_code, MaThongBaoThue=notice_id)
        return sent, mapping.voucher(sent.answer)
