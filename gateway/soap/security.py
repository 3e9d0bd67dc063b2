"""WS-Security UsernameToken for zeep's `wsse=`, built from settings; the password stays a SecretStr."""

from __future__ import annotations

from typing import Any

from lxml import etree
from pydantic import SecretStr
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
