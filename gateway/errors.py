"""The gateway's failure classes: adapters classify every failure into one of these, machinery acts on it.

    GatewayError
    ├── RetryableError            the same request may succeed later: retry, then park, then dead-letter
    │   ├── PartnerUnavailable    connection refused/reset, timeout, HTTP 5xx, SOAP server fault
    │   ├── PartnerThrottled      HTTP 429 (carries retry_after_s when the partner said so)
    │   └── SessionExpired        the partner's session ended; log in again and retry at once
    └── PermanentError            retrying cannot help: dead-letter at once with the reason
        ├── InvalidMessage        the input is not a valid contract message (bad JSON, schema, encoding)
        ├── PartnerRejected       the partner refused the request on business grounds (4xx, error code)
        ├── PartnerProtocolError  the partner answered something we cannot understand
        │   └── HostileXml        XML refused by the hardened parser (DTD, entity, oversize, too deep, malformed)
        ├── SignatureRejected     an XML signature did not prove who wrote the document (never raised itself)
        │   ├── SignatureMissing  the document carries no signature
        │   └── SignatureInvalid  the signature does not verify, covers too little, or uses a refused algorithm
        └── ProcessingFailed      the gateway kept failing on this record itself (raised by the machinery)

Adapters raise these; they never retry, sleep, dead-letter or count by themselves. Every class but the
ABSTRACT ones may be raised as it is, so each is a label of the failure metrics (gateway.metrics).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every classified failure; `reason` is safe to log (never personal data)."""

    def __init__(self, reason: str, *, partner_code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partner_code = partner_code


class RetryableError(GatewayError):
    """The same request may succeed later."""


class PartnerUnavailable(RetryableError):
    """The partner could not be reached or failed on its side (timeout, connection error, 5xx, SOAP server fault)."""


class PartnerThrottled(RetryableError):
    """The partner asked us to slow down (HTTP 429)."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None, partner_code: str | None = None) -> None:
        super().__init__(reason, partner_code=partner_code)
        self.retry_after_s = retry_after_s


class SessionExpired(RetryableError):
    """The partner's login session ended; the client logs in again before the retry."""


class PermanentError(GatewayError):
    """Retrying cannot help."""


class InvalidMessage(PermanentError):
    """The input message is not a valid contract message."""


class PartnerRejected(PermanentError):
    """The partner refused the request on business grounds; `reason` carries its answer."""


class ProcessingFailed(PermanentError):
    """The gateway itself kept failing on this record with the same internal error (a bug or a value the
    store cannot hold): dead-lettered after a bounded number of tries so it cannot hold up its partition."""


class PartnerProtocolError(PermanentError):
    """The partner's answer could not be understood (malformed body, unexpected shape)."""


class HostileXml(PartnerProtocolError):
    """XML the hardened parser refused (gateway.soap.xml); `kind` says what, the reason never quotes content."""

    # `kind` has a default only so that copy.copy and pickle (which call the class with the reason alone,
    # then restore the attributes) work; every raise names it.
    def __init__(self, reason: str, *, kind: str = "unknown", partner_code: str | None = None) -> None:
        super().__init__(reason, partner_code=partner_code)
        self.kind = kind


class SignatureRejected(PermanentError):
    """A signed document's XML signature is missing or does not verify against the configured certificate."""


class SignatureMissing(SignatureRejected):
    """The document carries no XML signature where one is required."""


class SignatureInvalid(SignatureRejected):
    """The signature does not verify, does not cover the whole document, or uses an algorithm we refuse."""


# Bases that classify but are never raised as themselves: not labels of the failure metrics.
ABSTRACT: tuple[type[GatewayError], ...] = (GatewayError, RetryableError, PermanentError, SignatureRejected)
