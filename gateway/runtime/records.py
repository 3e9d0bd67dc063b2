"""The broker-neutral view of one consumed record that the pipeline and adapters see."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """One Kafka record, detached from the client library that fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    def header(self, name: str) -> bytes | None:
        """Last value of a header, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    @property
    def coordinates(self) -> str:
        """`topic/partition@offset`, for logs and dead-letter headers."""
        return f"{self.topic}/{self.partition}@{self.offset}"
