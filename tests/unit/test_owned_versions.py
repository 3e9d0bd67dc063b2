"""The owned-dossier version memory: answers only when certain, forgets on every doubt."""

from __future__ import annotations

from gateway.store.owned_versions import OwnedVersions


def test_unknown_dossier_is_never_answered() -> None:
    owned = OwnedVersions()
    assert owned.newer_than_known("portal", "D1", 5) == (False, None)
    assert (owned.hits, owned.misses) == (0, 1)


def test_a_remembered_absent_dossier_answers_any_version_as_new() -> None:
    owned = OwnedVersions()
    owned.remember("portal", "D1", None)
    assert owned.newer_than_known("portal", "D1", 1) == (True, None)
    assert owned.newer_than_known("other-adapter", "D1", 1) == (False, None)  # per adapter


def test_only_strictly_newer_versions_are_answered() -> None:
    owned = OwnedVersions()
    owned.remember("portal", "D1", 3)
    assert owned.newer_than_known("portal", "D1", 4) == (True, 3)
    # Equal or older: a duplicate or a stale message; the database must tell which.
    assert owned.newer_than_known("portal", "D1", 3) == (False, None)
    assert owned.newer_than_known("portal", "D1", 1) == (False, None)


def test_advanced_updates_but_never_adds() -> None:
    owned = OwnedVersions()
    owned.advanced("portal", "D1", 4)  # e.g. a retry tier settled a parked dossier: not ours to remember
    assert len(owned) == 0
    owned.remember("portal", "D1", 3)
    owned.advanced("portal", "D1", 4)
    assert owned.newer_than_known("portal", "D1", 4) == (False, None)
    assert owned.newer_than_known("portal", "D1", 5) == (True, 4)


def test_forget_and_clear() -> None:
    owned = OwnedVersions()
    owned.remember("portal", "D1", 1)
    owned.remember("portal", "D2", 1)
    owned.forget("portal", "D1")
    assert owned.newer_than_known("portal", "D1", 2) == (False, None)
    assert owned.newer_than_known("portal", "D2", 2) == (True, 1)
    owned.clear()
    assert len(owned) == 0


def test_capacity_drops_the_oldest_entry() -> None:
    owned = OwnedVersions(capacity=2)
    owned.remember("portal", "D1", 1)
    owned.remember("portal", "D2", 1)
    owned.remember("portal", "D2", 2)  # an update does not grow it ...
    assert owned.newer_than_known("portal", "D1", 9) == (True, 1)  # ... nor evict anyone
    owned.remember("portal", "D3", 1)
    assert len(owned) == 2
    assert owned.newer_than_known("portal", "D1", 9) == (False, None)
    assert owned.newer_than_known("portal", "D3", 9) == (True, 1)
