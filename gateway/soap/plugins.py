"""zeep plugins, the seam for signing what goes out and keeping what came in, so neither is code in a handler."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from lxml import etree
from zeep import Plugin

from gateway.soap.signing import SigningMaterial, sign

_replies: ContextVar[list[etree._Element] | None] = ContextVar("soap_replies", default=None)


class SignElement(Plugin):  # zeep is untyped: Plugin is Any to mypy
    """Signs one element of the outgoing body (enveloped XML-DSig), for the operations named.

    zeep renders the element from the WSDL like any other; this plugin then replaces it by a signed copy just
    before the message leaves (before WS-Security adds its header). Exclusive c14n makes the signature
    independent of the envelope around it, so the partner can verify the element on its own.
    """

    def __init__(self, element: str, operations: frozenset[str], material: Callable[[], SigningMaterial]) -> None:
        self._element = element  # Clark notation: {namespace}LocalName
        self._operations = operations
        self._material = material

    def egress(
        self, envelope: etree._Element, http_headers: dict[str, str], operation: Any, binding_options: Any
    ) -> tuple[etree._Element, dict[str, str]]:
        if getattr(operation, "name", None) not in self._operations:
            return envelope, http_headers
        found = envelope.find(f".//{self._element}")
        if found is None:
            raise ValueError(f"no {self._element} in the {operation.name} request to sign")
        material = self._material()
        signed = sign(found, key_pem=material.key_pem, cert_pem=material.cert_pem)
        found.getparent().replace(found, signed)
        return envelope, http_headers


class KeepReplies(Plugin):  # zeep is untyped: Plugin is Any to mypy
    """Keeps each answer's envelope as the hardened parser read it, for the caller inside `kept_replies()`:
    a signed document in an answer must be verified on its XML, which zeep's objects no longer are."""

    def ingress(
        self, envelope: etree._Element, http_headers: dict[str, str], operation: Any
    ) -> tuple[etree._Element, dict[str, str]]:
        replies = _replies.get()
        if replies is not None:
            replies.append(envelope)
        return envelope, http_headers


@contextmanager
def kept_replies() -> Iterator[list[etree._Element]]:
    """The answers' envelopes of the SOAP calls made inside the block, by this task only."""
    replies: list[etree._Element] = []
    token = _replies.set(replies)
    try:
        yield replies
    finally:
        _replies.reset(token)
