"""Builds a zeep AsyncClient from a local WSDL on our transport and hardened settings, bound to an address."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zeep import AsyncClient, Settings
from zeep import exceptions as zeep_errors
from zeep.plugins import Plugin
from zeep.proxy import AsyncServiceProxy

from gateway.soap.transport import SoapTransport


def zeep_settings() -> Settings:
    """zeep's own parser configured like ours: no DTD, no entities, no external fetches, no huge trees.

    zeep parses answers again after SoapTransport checked them with gateway.soap.xml (it has no hook for
    a parser of ours); these settings make that second parse refuse the same things.
    """
    return Settings(
        strict=True,  # never libxml2's recover mode: a broken answer is an error, not a guess
        xml_huge_tree=False,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )


def build_client(
    wsdl: Path, transport: SoapTransport, *, wsse: Any = None, plugins: Sequence[Plugin] = ()
) -> AsyncClient:
    """A zeep AsyncClient on the local WSDL (read through `transport.load`, never over the network).

    Reads files synchronously: build clients at start-up, not per call. `wsse` is what zeep applies to
    every request (gateway.soap.security.UsernameTokenHeader, or a list of such). A contract that cannot be
    used raises ValueError with one line, like any other configuration error.
    """
    try:
        client: AsyncClient = AsyncClient(  # type: ignore[no-untyped-call]  # zeep is not annotated
            str(wsdl.resolve()), wsse=wsse, transport=transport, plugins=list(plugins), settings=zeep_settings()
        )
    except zeep_errors.Error as exc:
        # A WSDL importing a remote schema, a DOCTYPE in a contract, a WSDL zeep cannot read: configuration.
        raise ValueError(f"WSDL {wsdl}: {type(exc).__name__}: {_first_line(exc)}") from None
    return client


def bind(client: AsyncClient, address: str, *, binding: str | None = None) -> AsyncServiceProxy:
    """The client's operations sent to `address` (from settings, not the WSDL's placeholder location).

    `binding` is the binding's QName ("{namespace}Name"); it may be omitted when the WSDL has only one.
    zeep's own `create_service` would return a synchronous proxy, whose calls never await the transport.
    """
    bindings = client.wsdl.bindings
    if binding is None:
        if len(bindings) != 1:
            names = ", ".join(sorted(bindings))
            raise ValueError(f"the WSDL has {len(bindings)} bindings ({names}): name the one to use")
        binding = next(iter(bindings))
    try:
        chosen = bindings[binding]
    except KeyError:
        raise ValueError(f"the WSDL has no binding {binding}") from None
    return AsyncServiceProxy(client, chosen, address=address)  # type: ignore[no-untyped-call]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no detail"
