"""Structured logging (structlog) that scrubs personal data before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
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
# A 12-digit personal ID number or a 9–11 digit phone number inside free text.
_NUMBERS = re.compile(r"(?<!\d)(\d{12}|0\d{8,10}|\+84\d{9,10})(?!\d)")
REDACTED = "[redacted]"


def scrub_text(text: str) -> str:
    """Mask ID numbers and phone numbers in free text."""
    return _NUMBERS.sub(REDACTED, text)


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]), stream=sys.stderr)
