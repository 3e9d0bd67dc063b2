"""SOAP faults and zeep's errors classified into gateway.errors, with the partner's text scrubbed and bounded.

SOAP 1.1 `Client` and SOAP 1.2 `Sender` faults are the partner refusing this request (permanent);
`Server` / `Receiver` faults are the partner failing on its side (retryable). WS-Security faults about our
credentials (FailedAuthentication, InvalidSecurityToken...) are retryable like the portal's refused login:
every message would fail alike until the configuration is fixed, so the circuit breaker pauses consumption
instead of the dead-letter topic filling up. Anything else is a protocol error (permanent).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from lxml import etree
from zeep import exceptions as zeep_errors

from gateway.errors import (
    GatewayError,
    HostileXml,
    InvalidMessage,
    PartnerProtocolError,
    PartnerRejected,
    PartnerThrottled,
    PartnerUnavailable,
    SignatureInvalid,
)
from gateway.http_client import MAX_RAW_CHARS, bounded, collapse, scrubbed_error
from gateway.logging import scrub_text
from gateway.soap.transport import SOAP11_ENVELOPE_NS, SOAP12_ENVELOPE_NS
from gateway.soap.xml import DOCTYPE, ENTITY, NOT_WELL_FORMED

_REJECTED: Final = frozenset({"Client", "Sender"})
_UNAVAILABLE: Final = frozenset({"Server", "Receiver"})
# OASIS WS-Security 1.1 §12 fault codes that mean "your credentials or security header", not "this request".
_CREDENTIALS: Final = frozenset(
    {"FailedAuthentication", "InvalidSecurityToken", "SecurityTokenUnavailable", "InvalidSecurity", "MessageExpired"}
)


@dataclass(frozen=True, slots=True)
class FaultInfo:
    """A SOAP fault reduced to what classification needs: local names of the code and subcodes, the text."""

    code: str | None
    """Local name of the fault code ("Client", "Sender", "FailedAuthentication"), prefix dropped."""
    subcodes: tuple[str, ...]
    """SOAP 1.2 subcodes, or the dotted tail of a SOAP 1.1 code ("Client.Dossier" gives ("Dossier",))."""
    reason: str
    """The fault string as the partner wrote it (unscrubbed: pass it through `classify` before use)."""

    @property
    def partner_code(self) -> str:
        return ".".join(part for part in (self.code, *self.subcodes) if part) or "unknown"


def _local(qname: object) -> str | None:
    """Local name of a fault code given as "prefix:Name", "{ns}Name" or an lxml QName."""
    if qname is None:
        return None
    if isinstance(qname, etree.QName):
        return str(qname.localname)
    text = str(qname).strip()
    if text.startswith("{"):
        text = text.partition("}")[2]
    return text.rpartition(":")[2] or None


def _split_dotted(code: str | None) -> tuple[str | None, tuple[str, ...]]:
    # SOAP 1.1 refines a code by dots: "Client.Authentication" is a Client fault.
    if code is None:
        return None, ()
    head, *tail = code.split(".")
    return head or None, tuple(tail)


def fault_from_zeep(fault: zeep_errors.Fault) -> FaultInfo:
    """The FaultInfo of a zeep Fault (zeep keeps the code as text; its prefix is dropped, not resolved)."""
    code, dotted = _split_dotted(_local(fault.code))
    subcodes = tuple(name for name in (_local(sub) for sub in (fault.subcodes or ())) if name)
    return FaultInfo(code=code, subcodes=(*dotted, *subcodes), reason=str(fault.message or ""))


def fault_from_element(fault: etree._Element) -> FaultInfo:
    """The FaultInfo of a soap:Fault element (SOAP 1.1 or 1.2) parsed by hand, without zeep."""
    namespace = etree.QName(fault).namespace
    if namespace == SOAP12_ENVELOPE_NS:
        ns = {"env": SOAP12_ENVELOPE_NS}
        code = _local(fault.findtext("env:Code/env:Value", namespaces=ns))
        subcodes: list[str] = []
        node = fault.find("env:Code/env:Subcode", namespaces=ns)
        while node is not None:
            name = _local(node.findtext("env:Value", namespaces=ns))
            if name:
                subcodes.append(name)
            node = node.find("env:Subcode", namespaces=ns)
        reason = fault.findtext("env:Reason/env:Text", default="", namespaces=ns)
        return FaultInfo(code=code, subcodes=tuple(subcodes), reason=reason)
    if namespace != SOAP11_ENVELOPE_NS:
        return FaultInfo(code=None, subcodes=(), reason="")
    # SOAP 1.1 puts faultcode and faultstring in no namespace.
    head, dotted = _split_dotted(_local(fault.findtext("faultcode")))
    return FaultInfo(code=head, subcodes=dotted, reason=fault.findtext("faultstring", default=""))


def classify(fault: FaultInfo, *, known: Collection[str] = ()) -> GatewayError:
    """The gateway.errors class of a fault; `known` are values we sent that the text must not repeat."""
    code = bounded(scrub_text(fault.partner_code, known))
    text = _scrubbed(fault.reason, known) or "(no reason given)"
    names = {fault.code, *fault.subcodes}
    if names & _CREDENTIALS:
        return PartnerUnavailable(
            bounded(f"SOAP fault {code}: the partner refused our credentials: {text}"), partner_code=code
        )
    if fault.code in _REJECTED:
        return PartnerRejected(bounded(f"SOAP fault {code}: {text}"), partner_code=code)
    if fault.code in _UNAVAILABLE:
        return PartnerUnavailable(bounded(f"SOAP fault {code}: {text}"), partner_code=code)
    return PartnerProtocolError(
        bounded(f"SOAP fault {code} (neither a client nor a server fault): {text}"), partner_code=code
    )


def classify_fault(fault: zeep_errors.Fault | etree._Element, *, known: Collection[str] = ()) -> GatewayError:
    """The class of a zeep Fault or of a soap:Fault element."""
    info = fault_from_zeep(fault) if isinstance(fault, zeep_errors.Fault) else fault_from_element(fault)
    return classify(info, known=known)


def classify_zeep_error(exc: zeep_errors.Error, *, known: Collection[str] = ()) -> GatewayError:
    """The class of anything zeep raised. Messages that may hold the answer's bytes are never repeated."""
    if isinstance(exc, zeep_errors.Fault):
        return classify_fault(exc, known=known)
    if isinstance(exc, zeep_errors.TransportError):
        # Its message quotes the whole answer ("Content: b'...'"): only the status is kept.
        status = exc.status_code or 0
        if status == 429:
            return PartnerThrottled("HTTP 429", partner_code="429")
        if status >= 500 or status == 408:
            return PartnerUnavailable(f"HTTP {status} (transport error)", partner_code=str(status))
        return PartnerProtocolError(f"HTTP {status} (transport error)", partner_code=str(status) if status else None)
    if isinstance(exc, zeep_errors.DTDForbidden):
        return HostileXml("XML refused: it declares a DOCTYPE (DTDs are never accepted)", kind=DOCTYPE)
    if isinstance(exc, zeep_errors.EntitiesForbidden):
        return HostileXml("XML refused: it declares entities", kind=ENTITY)
    if isinstance(exc, zeep_errors.XMLSyntaxError):
        return HostileXml("XML refused: not well-formed (zeep)", kind=NOT_WELL_FORMED)
    if isinstance(exc, zeep_errors.ExternalReferenceForbidden):
        return PartnerProtocolError("a reference to an external document was refused")
    if isinstance(exc, zeep_errors.SignatureVerificationFailed):
        return SignatureInvalid("the WS-Security signature does not verify")
    if isinstance(exc, zeep_errors.ValidationError):
        # Raised while zeep builds the request from our values: the input does not fit the partner's schema.
        return InvalidMessage(f"the request does not fit the partner's schema: {_scrubbed(str(exc), known)}")
    # XMLParseError, UnexpectedElementError, LookupError...: the answer does not fit the contract.
    return PartnerProtocolError(f"{type(exc).__name__}: {_scrubbed(str(exc), known)}")


@contextmanager
def soap_errors(operation: str, *, known: Collection[str] = ()) -> Iterator[None]:
    """Around a zeep call: every failure leaves as a gateway.errors class named after `operation`, scrubbed.

        with soap_errors("submit_form", known=personal_values(form)):
            answer = await service.SubmitForm(...)

    Errors leave `from None`: the unscrubbed original must not ride along as the new error's context.
    """
    try:
        yield
    except GatewayError as exc:
        raise _renamed(exc, operation, known) from None
    except zeep_errors.Error as exc:
        raise _renamed(classify_zeep_error(exc, known=known), operation, known) from None


def _renamed(exc: GatewayError, operation: str, known: Collection[str]) -> GatewayError:
    return scrubbed_error(
        exc,
        lambda reason: f"{operation}: {scrub_text(reason[:MAX_RAW_CHARS], known)}",
        lambda code: scrub_text(code, known),
    )


def _scrubbed(text: str, known: Collection[str]) -> str:
    return bounded(scrub_text(collapse(text), known))
