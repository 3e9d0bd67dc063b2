"""zeep's async transport, ours: one pooled aiohttp session, local contracts only, answers checked before zeep.

zeep's own AsyncTransport runs on httpx, which collapses under concurrency here (docs/architecture.md, "Why
aiohttp"); zeep needs only `load` (sync: WSDL/XSD while the client is built), `post_xml` (async: returns an
object with `status_code`, `content`, `headers`, `encoding`) and `aclose`. Every failure leaves as a
gateway.errors class; a SOAP fault is passed on for zeep to parse and gateway.soap.faults to classify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlparse

import aiohttp
import structlog
from lxml import etree
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import HostileXml, PartnerProtocolError, PartnerRejected, PartnerUnavailable
from gateway.http_client import PooledClient, pooled_session, throttled, transport_failures
from gateway.soap.xml import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, OVERSIZE, parse_xml

log = structlog.get_logger(__name__)

SOAP11_ENVELOPE_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENVELOPE_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
_ENVELOPES: Final = frozenset({f"{{{SOAP11_ENVELOPE_NS}}}Envelope", f"{{{SOAP12_ENVELOPE_NS}}}Envelope"})
_CHUNK: Final = 64 * 1024
# WSDL and XSD files are ours (or a province's copy of its partner's); they may be larger than an answer.
_MAX_CONTRACT_BYTES: Final = 16 * 1024 * 1024
_MAX_CONTRACT_DEPTH: Final = 256


@dataclass(frozen=True, slots=True)
class SoapResponse:
    """What zeep's binding reads of an HTTP answer (it was written for requests.Response)."""

    status_code: int
    content: bytes
    headers: CIMultiDictProxy[str]
    encoding: str | None = None


@dataclass(slots=True)
class WireExchange:
    """One HTTP exchange as the ledger may record it: sizes, status and hashes, never a body.

    `request_sha256` is over the exclusive canonical form of the SOAP Body, not over the bytes sent: the
    header holds the WS-Security password (or its digest) and a nonce, which must not be hashed where
    anyone can try passwords against it, and which would make a redelivered request hash differently.
    `response_sha256` is over the raw bytes received, as they arrived.
    """

    address: str
    request_sha256: str
    request_bytes: int
    status: int | None = None
    response_sha256: str | None = None
    response_bytes: int | None = None


_exchanges: ContextVar[list[WireExchange] | None] = ContextVar("soap_wire_exchanges", default=None)


@contextmanager
def record_exchanges() -> Iterator[list[WireExchange]]:
    """Collect the exchanges made inside the block, for the ledger: `with record_exchanges() as seen:`.

    A context variable: calls of this task and of tasks started inside the block are recorded, not those of
    other tasks sharing the transport at the same time.
    """
    seen: list[WireExchange] = []
    token = _exchanges.set(seen)
    try:
        yield seen
    finally:
        _exchanges.reset(token)


def body_sha256(envelope: etree._Element) -> str:
    """SHA-256 hex of the exclusive canonical form of the envelope's Body (the whole envelope if none)."""
    body = next((child for child in envelope if etree.QName(child).localname == "Body"), envelope)
    return hashlib.sha256(etree.tostring(body, method="c14n", exclusive=True, with_comments=False)).hexdigest()


@dataclass(slots=True)
class _Body:
    data: bytes = b""
    truncated: bool = False
    received: int = 0


class SoapTransport(PooledClient):
    """A zeep transport over one pooled aiohttp session; give it to `gateway.soap.client.build_client`.

    Raises only gateway.errors classes from `post_xml` (plus RuntimeError when used before start()), and
    ValueError from `load` (a contract that cannot be used is a configuration error).
    """

    def __init__(
        self,
        *,
        contracts_dir: Path,
        timeout_s: float,
        max_connections: int,
        max_response_bytes: int = DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        connector: aiohttp.BaseConnector | None = None,
        user_agent: str = "dossier-gateway",
    ) -> None:
        if timeout_s <= 0 or max_connections < 1 or max_response_bytes < 1 or max_depth < 1:
            raise ValueError("SoapTransport: timeout, connections, response size and depth must be positive")
        self._contracts_dir = contracts_dir.resolve()
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._max_bytes = max_response_bytes
        self._max_depth = max_depth
        self._connector = connector
        self._user_agent = user_agent

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        headers = {"User-Agent": self._user_agent}
        return pooled_session(self._max_connections, self._timeout, connector=self._connector, headers=headers)

    async def aclose(self) -> None:
        """zeep's name for close (AsyncClient.__aexit__ calls it)."""
        await self.close()

    # --- contracts (zeep calls this while it builds the client) -------------------------------------------

    def load(self, url: str) -> bytes:
        """A WSDL or XSD from the contracts directory; anything else (a URL, a file outside) is refused.

        Contracts are never fetched over the network at run time: a partner's server would decide what the
        gateway sends, and every start would depend on it being up.
        """
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
        elif parsed.scheme == "":
            path = Path(url).expanduser()
        else:
            raise ValueError(
                f"contract {url!r} is not a local file: WSDL and XSD are loaded from {self._contracts_dir} only"
            )
        resolved = path.resolve()
        if not resolved.is_relative_to(self._contracts_dir):
            raise ValueError(f"contract {str(path)!r} is outside the contracts directory {self._contracts_dir}")
        try:
            data = resolved.read_bytes()
        except OSError as exc:
            raise ValueError(f"contract {str(path)!r} cannot be read ({type(exc).__name__})") from None
        try:
            parse_xml(data, max_bytes=_MAX_CONTRACT_BYTES, max_depth=_MAX_CONTRACT_DEPTH)
        except HostileXml as exc:
            raise ValueError(f"contract {resolved.name}: {exc.reason}") from None
        return data

    # --- calls (zeep's async binding awaits this) ---------------------------------------------------------

    async def post_xml(self, address: str, envelope: etree._Element, headers: Mapping[str, str]) -> SoapResponse:
        """POST the envelope; the answer, checked, for zeep to parse, or a classified GatewayError."""
        message = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        exchange = WireExchange(address=address, request_sha256=body_sha256(envelope), request_bytes=len(message))
        seen = _exchanges.get()
        if seen is not None:
            seen.append(exchange)
        status, response_headers, body = await self._post(address, message, headers)
        exchange.status = status
        # A hash of the part of an oversize answer that was read would identify nothing: none is recorded.
        exchange.response_sha256 = None if body.truncated else hashlib.sha256(body.data).hexdigest()
        exchange.response_bytes = body.received
        log.debug(
            "soap_exchange", status=status, request_bytes=len(message), response_bytes=body.received,
            request_sha256=exchange.request_sha256, response_sha256=exchange.response_sha256,
        )
        self._check(status, response_headers, body)
        return SoapResponse(status_code=status, content=body.data, headers=CIMultiDictProxy(response_headers))

    async def post(self, address: str, message: bytes, headers: Mapping[str, str]) -> SoapResponse:
        """zeep's HTTP-binding entry point: an already serialised message (SOAP bindings use post_xml)."""
        status, response_headers, body = await self._post(address, message, headers)
        self._check(status, response_headers, body)
        return SoapResponse(status_code=status, content=body.data, headers=CIMultiDictProxy(response_headers))

    async def _post(
        self, address: str, message: bytes, headers: Mapping[str, str]
    ) -> tuple[int, CIMultiDict[str], _Body]:
        http = self._session()
        with transport_failures(self._timeout_s):
            async with http.post(
                address, data=message, headers=dict(headers), timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await self._read(resp)
                return resp.status, CIMultiDict(resp.headers), body

    async def _read(self, resp: aiohttp.ClientResponse) -> _Body:
        """The body up to the size limit, decompressed (the limit bounds what a gzip bomb unpacks to)."""
        body = _Body()
        if resp.content_length is not None and resp.content_length > self._max_bytes:
            body.truncated, body.received = True, resp.content_length
            return body  # not read at all; leaving the block closes the connection instead of reusing it
        chunks: list[bytes] = []
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body.received += len(chunk)
            if body.received > self._max_bytes:
                body.truncated = True
                return body  # the rest is never read; leaving the block closes the connection
            chunks.append(chunk)
        body.data = b"".join(chunks)
        return body

    def _check(self, status: int, headers: CIMultiDict[str], body: _Body) -> None:
        """Raise the class of an answer zeep must not see; return for one zeep should parse.

        zeep gets: a 2xx envelope, a 201/202 without body (one-way operations), and any status with a SOAP
        Fault (500 is the usual one; gateway.soap.faults classifies it).
        """
        if status == 429:
            raise throttled(headers.get("Retry-After"))
        success = 200 <= status < 300
        if success and not body.truncated and not body.data and status in (201, 202):
            return
        if body.truncated:
            refusal: HostileXml | None = HostileXml(
                f"XML refused: answer of {body.received}+ bytes, over the limit of {self._max_bytes}", kind=OVERSIZE
            )
            root = None
        elif not body.data:
            refusal, root = None, None
        else:
            try:
                root, refusal = parse_xml(body.data, max_bytes=self._max_bytes, max_depth=self._max_depth), None
            except HostileXml as exc:
                root, refusal = None, exc
        if success:
            if refusal is not None:
                raise HostileXml(f"HTTP {status}: {refusal.reason}", kind=refusal.kind) from None
            if root is None:
                raise PartnerProtocolError(f"HTTP {status} with an empty body")
            if root.tag not in _ENVELOPES:
                raise PartnerProtocolError(f"HTTP {status} with XML that is not a SOAP envelope")
            return
        if root is not None and _has_fault(root):
            return  # zeep raises zeep.exceptions.Fault from it
        # No readable fault: the status decides. An error page (often HTML with a DOCTYPE from a proxy) is
        # not hostile, just not an answer; its text is never repeated.
        described = "" if refusal is None else f" ({refusal.kind.replace('_', ' ')} body)"
        if status >= 500 or status == 408:
            raise PartnerUnavailable(f"HTTP {status} without a SOAP fault{described}", partner_code=str(status))
        if status in (401, 403):
            # Our credentials or our address were refused: every message would fail alike until someone
            # fixes the configuration, so let the circuit breaker pause rather than dead-letter them all.
            raise PartnerUnavailable(f"HTTP {status}: access refused", partner_code=str(status))
        if 400 <= status < 500:
            raise PartnerRejected(f"HTTP {status} without a SOAP fault{described}", partner_code=str(status))
        raise PartnerProtocolError(f"unexpected HTTP {status}{described}", partner_code=str(status))


def _has_fault(root: etree._Element) -> bool:
    if root.tag not in _ENVELOPES:
        return False
    namespace = etree.QName(root).namespace
    return root.find(f"{{{namespace}}}Body/{{{namespace}}}Fault") is not None
