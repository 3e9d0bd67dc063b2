"""Credentials on SOAP requests: WS-Security UsernameToken for zeep's `wsse=`, and the national data exchange
platform's HTTP Basic digest (a zeep plugin); passwords and secrets stay SecretStr."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

from lxml import etree
from pydantic import SecretStr
from zeep import Plugin
from zeep.wsse.username import UsernameToken


class UsernameTokenHeader:
    """Adds `<wsse:Security><wsse:UsernameToken>` to every request zeep sends.

    zeep's UsernameToken keeps the password in a plain attribute for its lifetime; this one unwraps the
    SecretStr only while a header is written, so a repr, a debugger or a crash dump of the client shows
    no password. With `use_digest` the password travels as Base64(SHA-1(nonce + created + password)) with a
    fresh nonce and timestamp (the UsernameToken Profile's digest, which partners that ask for it expect).
    """

    def __init__(self, username: str, password: SecretStr, *, use_digest: bool = False) -> None:
        if not username:
            raise ValueError("WS-Security username must not be empty")
        self._username = username
        self._password = password
        self._use_digest = use_digest

    @property
    def username(self) -> str:
        return self._username

    @property
    def use_digest(self) -> bool:
        return self._use_digest

    def apply(self, envelope: etree._Element, headers: dict[str, Any]) -> tuple[etree._Element, dict[str, Any]]:
        """zeep's wsse hook: write the token into the envelope's header."""
        # zeep is not annotated, hence the ignores.
        token = UsernameToken(  # type: ignore[no-untyped-call]
            self._username, self._password.get_secret_value(), use_digest=self._use_digest
        )
        result: tuple[etree._Element, dict[str, Any]] = token.apply(envelope, headers)  # type: ignore[no-untyped-call]
        return result

    def verify(self, envelope: etree._Element) -> None:
        """zeep's wsse hook for answers: a UsernameToken has nothing to verify."""

    def __repr__(self) -> str:
        return f"UsernameTokenHeader(username={self._username!r}, password='**********', use_digest={self._use_digest})"


def username_token(username: str, password: SecretStr, *, use_digest: bool = False) -> UsernameTokenHeader:
    """The `wsse=` of gateway.soap.client.build_client from an adapter's settings fields."""
    return UsernameTokenHeader(username, password, use_digest=use_digest)


def ndxp_signature(url: str, username: str, timestamp: str, secret: SecretStr) -> str:
    """The national data exchange platform's password: hex SHA-256 of url + username + timestamp + secret."""
    material = f"{url}{username}{timestamp}{secret.get_secret_value()}".encode()
    return hashlib.sha256(material).hexdigest()


class NdxpBasicAuth(Plugin):  # zeep is untyped: Plugin is Any to mypy
    """HTTP Basic as NDXP asks it: `username:SHA256(url + username + timestamp + secret)`, with the timestamp
    (Unix milliseconds) in a `Timestamp` header. A fresh timestamp per request, so a captured header is good only
    as long as the platform's clock window; the secret is unwrapped only while the digest is computed."""

    def __init__(self, url: str, username: str, secret: SecretStr, *, clock: Callable[[], float] = time.time) -> None:
        if not username:
            raise ValueError("NDXP username must not be empty")
        self._url = url
        self._username = username
        self._secret = secret
        self._clock = clock

    def egress(
        self, envelope: etree._Element, http_headers: dict[str, str], operation: Any, binding_options: Any
    ) -> tuple[etree._Element, dict[str, str]]:
        timestamp = str(int(self._clock() * 1000))
        password = ndxp_signature(self._url, self._username, timestamp, self._secret)
        token = base64.b64encode(f"{self._username}:{password}".encode()).decode("ascii")
        headers = dict(http_headers)
        headers["Authorization"] = f"Basic {token}"
        headers["Timestamp"] = timestamp
        return envelope, headers
