"""The last synced version of the dossiers this process owns, remembered so most messages need no state lookup.

A dossier's messages carry its code as their key, so they all land in one partition, and one process of the
consumer group owns that partition: while it does, nobody else advances the dossier, and the version this
process last read or wrote is the stored one. Three things end that certainty, and each empties or trims
the memory:

- partitions move (any rebalance of any of the process's consumers): `clear()`;
- a message of the dossier is parked in a retry tier (tier topics are consumed by other groups, whose
  partitions may be owned by another process): `forget(dossier)`, and a parked dossier is not remembered
  again until its line is empty;
- a write that lost its compare-and-set (someone else was ahead): `forget(dossier)`.

Only the version is remembered. A message newer than it cannot have been processed (a processed mark is
written together with an advance to at least the message's version, or for a stale message), so the
processed lookup is skipped too; anything else goes to the database as before.
"""

from __future__ import annotations

from typing import Final

_ABSENT: Final = -1  # a remembered "no state row yet" (versions start at 1)


class OwnedVersions:
    """(adapter, dossier code) → last synced version, bounded; oldest entries go first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._versions: dict[tuple[str, str], int] = {}
        self.hits = 0
        self.misses = 0

    def newer_than_known(self, adapter: str, dossier_code: str, version: int) -> tuple[bool, int | None]:
        """(True, last version) when `version` is certainly new for this dossier; (False, None) if unsure."""
        last = self._versions.get((adapter, dossier_code))
        if last is None or version <= last:
            self.misses += 1
            return False, None
        self.hits += 1
        return True, (None if last == _ABSENT else last)

    def remember(self, adapter: str, dossier_code: str, last_version: int | None) -> None:
        """What the database just said (or what a won write made it say) about an owned, unparked dossier."""
        key = (adapter, dossier_code)
        if key not in self._versions and len(self._versions) >= self._capacity:
            del self._versions[next(iter(self._versions))]  # dicts keep insertion order: the oldest goes
        self._versions[key] = _ABSENT if last_version is None else last_version

    def advanced(self, adapter: str, dossier_code: str, version: int) -> None:
        """A write of ours moved the dossier to `version`: update it if remembered (never add a dossier here)."""
        key = (adapter, dossier_code)
        if key in self._versions:
            self._versions[key] = version

    def forget(self, adapter: str, dossier_code: str) -> None:
        self._versions.pop((adapter, dossier_code), None)

    def clear(self) -> None:
        self._versions.clear()

    def __len__(self) -> int:
        return len(self._versions)
