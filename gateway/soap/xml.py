"""The gateway's one hardened XML parser: no DTD, no entities, no network, bounded size and depth.

Every XML the gateway reads from outside goes through `parse_xml` (SOAP answers before zeep sees them,
signed documents before their signature is checked, simulators' requests). A document with a DOCTYPE is
refused outright, whatever the DTD says: that one rule stops external entities (XXE), entity expansion
(billion laughs), external and parameter-entity DTDs at once, and no real SOAP partner needs a DTD.
"""

from __future__ import annotations

from typing import Any, Final

from lxml import etree

from gateway.errors import HostileXml

# Defaults for the partners' settings: a SOAP answer of the tax office or the population database is a few
# kilobytes; 4 MiB leaves room for attachments inlined as base64 without letting one answer fill memory.
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
# Envelope, body, operation, document, items, item, field, plus a signature's five levels: about a dozen.
DEFAULT_MAX_DEPTH: Final = 64

# What a refusal says it refused (HostileXml.kind): stable words for tests, logs and metrics.
DOCTYPE: Final = "doctype"
ENTITY: Final = "entity"
OVERSIZE: Final = "oversize"
TOO_DEEP: Final = "too_deep"
NOT_WELL_FORMED: Final = "not_well_formed"

# The one configuration. resolve_entities/load_dtd/no_network are belt and braces behind the DOCTYPE
# refusal; huge_tree=False keeps libxml2's own limits (depth 256, 10 MB text nodes, entity amplification).
# Comments and processing instructions are dropped so that text split by one reads whole: the classic
# "signed <!---->text" truncation trick cannot make code read less than what was signed.
PARSER_OPTIONS: Final[dict[str, Any]] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
    "recover": False,
    "collect_ids": False,
}

_DOCTYPE_MARK: Final = b"<!DOCTYPE"


def hardened_parser() -> etree.XMLParser:
    """A fresh lxml parser with the gateway's configuration (for libraries that take a parser: signxml).

    Fresh per call: an lxml parser must not be shared between threads, and creating one costs microseconds.
    """
    return etree.XMLParser(**PARSER_OPTIONS)


def parse_xml(data: bytes, *, max_bytes: int, max_depth: int) -> etree._Element:
    """The root element of `data`, or HostileXml naming what was refused (never quoting the content).

    Bytes only: a str would have been decoded already, and an encoding declaration inside could then lie.
    """
    if not isinstance(data, bytes):
        raise TypeError("parse_xml takes the raw bytes, not a decoded string")
    if len(data) > max_bytes:
        raise HostileXml(f"XML refused: {len(data)} bytes, over the limit of {max_bytes}", kind=OVERSIZE)
    parser = hardened_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise _syntax_refusal(exc, parser, data) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise HostileXml("XML refused: it declares a DOCTYPE (DTDs are never accepted)", kind=DOCTYPE)
    # Unreachable without a DTD (an undeclared entity is a syntax error), kept so that a change of the
    # options above cannot let an unexpanded entity through silently.
    for _entity in root.iter(etree.Entity):
        raise HostileXml("XML refused: it holds an entity reference", kind=ENTITY)
    _check_depth(root, max_depth)
    return root


def _check_depth(root: etree._Element, max_depth: int) -> None:
    depth = 0
    for event, _element in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise HostileXml(f"XML refused: elements nested deeper than {max_depth}", kind=TOO_DEEP)
        else:
            depth -= 1


def _syntax_refusal(exc: etree.XMLSyntaxError, parser: etree.XMLParser, data: bytes) -> HostileXml:
    """The refusal for a document libxml2 could not parse; names libxml2's error type, never the text."""
    entry = parser.error_log.last_error
    type_name = entry.type_name if entry is not None else "ERR_UNKNOWN"
    where = f"line {exc.lineno}" if exc.lineno else "at the start"
    # A DOCTYPE is the likeliest cause of trouble in a hostile document (an entity loop, an undeclared
    # parameter entity): say so. Only a hint for the reason; refusing does not depend on it. A document in
    # UTF-16 hides the mark from this scan, which only changes the reason given.
    if _DOCTYPE_MARK in data:
        return HostileXml(f"XML refused: it declares a DOCTYPE ({type_name}, {where})", kind=DOCTYPE)
    if "ENTITY" in type_name:
        return HostileXml(f"XML refused: entity reference ({type_name}, {where})", kind=ENTITY)
    if type_name == "ERR_RESOURCE_LIMIT":
        # libxml2's message is its own fixed text ("Excessive depth in document: 256 ..."), not content.
        message = entry.message if entry is not None else ""
        if "depth" in message.lower():
            return HostileXml(f"XML refused: elements nested too deep for the parser ({where})", kind=TOO_DEEP)
        return HostileXml(f"XML refused: over the parser's size limits ({type_name}, {where})", kind=OVERSIZE)
    return HostileXml(f"XML refused: not well-formed ({type_name}, {where})", kind=NOT_WELL_FORMED)
