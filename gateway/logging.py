"""Structured logging (structlog) that scrubs personal data before anything is written."""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

# Keys whose values are personal data wherever they appear (ours and the partners' field names).
PERSONAL_KEYS = frozenset(
    {
        "full_name", "id_number", "phone", "email", "address", "applicant", "tax_code",
        "chuhoso", "sodienthoai", "madoituong", "hovaten", "sodinhdanh", "socmnd", "ngaythangnamsinh",
        "hotennguoinop", "socmndnguoinop", "diachi", "password", "session", "secret",
    }
)
REDACTED = "[redacted]"

# Personal data a partner may echo in free text, recognisable by shape. One alternation, one pass.
# The fences keep our own identifiers readable: dossier codes (000.00.01.H12-261201-0001), UUIDs and hex
# digests (digits touching letters or "-"), ISO timestamps (a date followed by "T" or a time of day is a
# timestamp, not a birth date), portal times (14 digits) and amounts (1.500.000: digits after "<digit>.").
_NOT_AFTER = r"(?<![\w\-+])(?<!\d[.,])"  # not inside a word, a dashed identifier or a dotted number
_NOT_BEFORE = r"(?![\w\-]|[.,:/]\d)"  # a trailing "." or ":" ends a sentence, "<sep><digit>" continues a number
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH = r"(?:0?[1-9]|1[0-2])"
_YEAR = r"(?:19|20)\d\d"
_PERSONAL_SHAPES = (
    # E-mail first: its local part may hold digits that would otherwise be read as a phone number. The
    # look-behind makes it start only where a run of local-part characters starts (else long words are O(n²)).
    r"(?<![\w.%+\-])[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+",
    # Dates: dd/mm/yyyy (also "-" or "."), yyyy-mm-dd (also "/" or "."), yyyymmdd; not when a time follows.
    rf"{_NOT_AFTER}(?:{_DAY}(?P<s1>[/.\-]){_MONTH}(?P=s1){_YEAR}|{_YEAR}(?P<s2>[/.\-]){_MONTH}(?P=s2){_DAY}"
    rf"|{_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])){_NOT_BEFORE}(?!\s?\d{{1,2}}:\d\d)",
    # Phones: 0 or (+)84 then 9-10 digits (mobiles 9, landlines 10), single spaces or dots between digits.
    rf"{_NOT_AFTER}(?:(?:\(\+84\)|\+84)[ .]?|84|0)\d(?:[ .]?\d){{8,9}}(?![ .]?\d){_NOT_BEFORE}",
    # Personal ID numbers: 12 digits (CCCD) or the old 9-digit CMND.
    rf"{_NOT_AFTER}(?:\d{{12}}|\d{{9}}){_NOT_BEFORE}",
)
_SHAPES = re.compile("|".join(f"(?:{shape})" for shape in _PERSONAL_SHAPES))
# Every shape holds a digit or an "@": most log values hold neither and skip the alternation (7x dearer).
_MAYBE_SHAPED = re.compile(r"[\d@]")
# Known values shorter than this are not searched for: they would shred ordinary words and identify no one.
_MIN_KNOWN_CHARS = 3


def _fold(text: str) -> str:
    """NFC, case-folded, whitespace collapsed: the form in which known values are looked for."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _unaccented(text: str) -> str:
    # Partner systems often drop Vietnamese diacritics ("Nguyen Van An"); đ is a letter, not d + a mark.
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _known_pattern(text: str, known: Iterable[str]) -> re.Pattern[str] | None:
    """A regex of the known values that (probably) occur in `text`, or None when none does."""
    folded = _fold(text)
    variants: set[str] = set()
    for value in known:
        wanted = _fold(value)
        if len(wanted) < _MIN_KNOWN_CHARS:
            continue
        for variant in (wanted, _unaccented(wanted)):
            # A substring test first: compiling a regex per call is only worth it when there is a hit.
            if variant in folded:
                variants.add(variant)
    if not variants:
        return None
    # Longest first, so a value that contains another is removed whole. Whitespace matches any run of it,
    # and the fences keep "An" from matching inside "Anh".
    alternatives = (r"\s+".join(map(re.escape, v.split())) for v in sorted(variants, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)", re.IGNORECASE)


def scrub_text(text: str, known: Collection[str] = ()) -> str:
    """Mask personal data in free text: `known` values verbatim, then e-mails, dates, phone and ID numbers.

    `known` are the personal values the caller sent in the request a partner is answering (names,
    addresses, ID numbers...; see `personal_values`): a partner's text may echo them, and names and
    addresses cannot be recognised by shape. They match case-insensitively, in any Unicode normal form, with
    or without Vietnamese diacritics and whatever the whitespace; the result is NFC when `known` is given.
    """
    if known:
        text = unicodedata.normalize("NFC", text)
        pattern = _known_pattern(text, known)
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
    return _SHAPES.sub(REDACTED, text) if _MAYBE_SHAPED.search(text) else text


def personal_values(data: Any) -> tuple[str, ...]:
    """Every scalar held under a PERSONAL_KEYS key at any depth of `data`: the `known` of `scrub_text`."""
    found: list[str] = []

    def walk(value: Any, personal: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, personal or str(key).lower() in PERSONAL_KEYS)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, personal)
        elif personal and isinstance(value, str | int) and not isinstance(value, bool):
            found.append(str(value))

    walk(data, False)
    return tuple(found)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in PERSONAL_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_personal_data(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last line of defence against personal data in logs."""
    for key in list(event):
        event[key] = REDACTED if key.lower() in PERSONAL_KEYS else _scrub(event[key])
    return event


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of writing. structlog's PrintLogger keeps the file it was
    given, and loggers are cached on first use: bound to the stderr of the moment, a process whose stderr is
    swapped (a CLI run in-process by a test runner, then closed) would fail every later log line with "I/O
    operation on closed file"."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Configure structlog and the standard library to write scrubbed records to stderr."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]), stream=sys.stderr)
