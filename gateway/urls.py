"""Settings types for partners' URLs, shared by every adapter's settings (no I/O, nothing imported but pydantic)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An http(s) URL kept as given (a SOAP endpoint)."""
HttpRoot = Annotated[str, AfterValidator(lambda value: _http_url(value).rstrip("/"))]
"""An http(s) API root without its trailing slash (paths are appended with their own)."""
