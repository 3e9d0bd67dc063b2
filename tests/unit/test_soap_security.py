"""WS-Security UsernameToken: written into the header as the profile says, the password never shown."""

from __future__ import annotations

import base64
import hashlib

from lxml import etree
from pydantic import SecretStr

from gateway.soap.security import UsernameTokenHeader, username_token

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD = "Mat-Khau-9f3e"


def envelope() -> etree._Element:
    return etree.fromstring(
        b'<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soap-env:Body><Ping/></soap-env:Body></soap-env:Envelope>"
    )


def token_of(header: UsernameTokenHeader) -> etree._Element:
    applied, _ = header.apply(envelope(), {})
    token = applied.find(f".//{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    assert token is not None
    return token


def test_plain_text_password() -> None:
    token = token_of(username_token("land-office", SecretStr(PASSWORD)))
    assert token.findtext(f"{{{WSSE}}}Username") == "land-office"
    password = token.find(f"{{{WSSE}}}Password")
    assert password is not None and password.text == PASSWORD
    assert password.get("Type") == f"{PROFILE}#PasswordText"


def test_password_digest_follows_the_profile() -> None:
    token = token_of(username_token("land-office", SecretStr(PASSWORD), use_digest=True))
    password = token.find(f"{{{WSSE}}}Password")
    assert password is not None and password.get("Type") == f"{PROFILE}#PasswordDigest"
    nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
    created = token.findtext(f"{{{WSU}}}Created") or ""
    expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + PASSWORD.encode()).digest()).decode()
    assert password.text == expected and PASSWORD not in etree.tostring(token).decode()
    # A fresh nonce each time: a captured digest cannot be replayed as the next request's.
    assert token_of(username_token("u", SecretStr(PASSWORD), use_digest=True)).findtext(f"{{{WSSE}}}Nonce") != (
        token.findtext(f"{{{WSSE}}}Nonce")
    )


def test_the_password_is_not_in_the_header_objects_repr_or_attributes() -> None:
    header = username_token("land-office", SecretStr(PASSWORD), use_digest=True)
    assert PASSWORD not in repr(header) and PASSWORD not in str(header)
    assert all(PASSWORD not in repr(value) for value in vars(header).values())
    assert header.username == "land-office" and header.use_digest


def test_verify_accepts_any_answer() -> None:
    assert username_token("u", SecretStr("p")).verify(envelope()) is None
