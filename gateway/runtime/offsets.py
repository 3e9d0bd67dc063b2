"""Per-partition offset tracking: what may be committed while later messages finish first."""

from __future__ import annotations

import heapq


class PartitionOffsets:
    """Offsets of one partition that were handed out and not yet finished.

    Work finishes out of order (different dossiers run concurrently), so the committable offset is the
    lowest unfinished one — committing past it would lose that message if the process died (the idea of
    Confluent's Parallel Consumer). A heap with lazy deletion keeps start/finish O(log n).

    One instance covers one assignment of the partition: `epoch` tells assignments apart, so work handed out
    before a rebalance can never finish offsets of the partition's next assignment (see KeyOrderedConsumer).
    """

    __slots__ = ("_done", "_heap", "_highest", "epoch")

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch
        self._heap: list[int] = []
        self._done: set[int] = set()
        self._highest = -1

    def started(self, offset: int) -> None:
        heapq.heappush(self._heap, offset)
        if offset > self._highest:
            self._highest = offset

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        while self._heap and self._heap[0] in self._done:
            self._done.discard(heapq.heappop(self._heap))

    @property
    def highest(self) -> int:
        """Highest offset handed out so far, or -1."""
        return self._highest

    @property
    def in_flight(self) -> int:
        return len(self._heap) - len(self._done)

    def committable(self) -> int | None:
        """Next offset to commit (Kafka commits the offset of the next message to read), or None."""
        if self._heap:
            return self._heap[0]
        return self._highest + 1 if self._highest >= 0 else None
