"""SOAP client of the national population database (XacThucThongTinCongDan, TraCuuThongTinCongDan) through the
national data exchange platform: zeep over our pooled transport (gateway/soap), the platform's Basic digest on
every request. Raises only gateway.errors classes, the database's text scrubbed of the values sent; never retries.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from adapters.population_db import mapping
from adapters.population_db.settings import PopulationSettings
from gateway.errors import PartnerRejected
from gateway.soap.client import bind, build_client
from gateway.soap.faults import soap_errors
from gateway.soap.security import NdxpBasicAuth
from gateway.soap.transport import SoapTransport, record_exchanges


@dataclass(frozen=True, slots=True)
class Answer:
    """The database's answer and the SHA-256 of what went over the wire (never the bodies)."""

    operation: str
    answer: Any
    request_sha256: str
    response_sha256: str


PROBE_ID_NUMBER = "000000000000"  # province code 000 exists nowhere: no citizen's number


class PopulationClient:
    """One account at the exchange platform, one pooled transport, the local WSDL."""

    def __init__(self, settings: PopulationSettings, *, max_connections: int = 50) -> None:
        self._settings = settings
        self._max_connections = settings.max_connections or max_connections
        self._transport: SoapTransport | None = None
        self._service: Any = None

    async def start(self) -> None:
        s = self._settings
        self._transport = SoapTransport(
            contracts_dir=s.wsdl_path.parent, timeout_s=s.timeout_s, max_connections=self._max_connections,
            max_response_bytes=s.max_response_bytes, max_depth=s.max_xml_depth,
        )
        client = build_client(s.wsdl_path, self._transport, plugins=(NdxpBasicAuth(s.base_url, s.username, s.secret),))
        self._service = bind(client, s.base_url)
        await self._transport.start()

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()

    async def _call(self, operation: str, fields: dict[str, Any], known: Collection[str]) -> Answer:
        if self._service is None:
            raise RuntimeError("PopulationClient used before start()")
        with record_exchanges() as wire, soap_errors(operation, known=known):
            answer = await getattr(self._service, operation)(**fields)
        last = wire[-1] if wire else None
        return Answer(operation, answer, last.request_sha256 if last else "",
                      (last.response_sha256 or "") if last else "")

    async def probe(self) -> str:
        """`gateway check`: a verification of a number no citizen has (province code 000), asked as the gateway's
        own account, not an officer's: the database answering at all — "not found" or a refusal — proves the
        network, the exchange platform's authentication and the service. An unreachable platform or a refused
        account raises PartnerUnavailable."""
        s = self._settings
        fields = {"MaYeuCau": "GW-PROBE", "MaDVC": s.service_code, "MaTichHop": s.integration_code,
                  "MaDonVi": "GATEWAY", "MaCanBo": "gateway-check", "SoDinhDanh": PROBE_ID_NUMBER,
                  "HoVaTen": "KIEM TRA", "NgayThangNamSinh": "2000"}
        try:
            await self.verify(fields)
        except PartnerRejected as exc:
            return f"authenticated; a probe verification refused as expected ({exc.reason})"
        return "authenticated; a probe verification answered"

    async def verify(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Answer:
        """XacThucThongTinCongDan: does the number exist, and do name and date of birth agree (nothing else)."""
        return await self._call(mapping.VERIFY, fields, known)

    async def lookup(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Answer:
        """TraCuuThongTinCongDan: the same verdict, and the citizen's record (the handler keeps what is allowed)."""
        return await self._call(mapping.LOOKUP, fields, known)
