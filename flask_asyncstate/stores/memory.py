"""In-process store: the embedded default. Shared by the threads of one process only."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Found, Store

_PURGE_EVERY = 1.0

_VERSIONS = itertools.count(1)


@dataclass
class _Slot:
    text: str
    ttl: float  # seconds; 0 = never expires
    expires_at: float
    cancelled: bool = False
    version: int = 0


@dataclass
class _Index:
    active: set[str]
    recent: dict[str, float]  # member -> score
    expires_at: float


class MemoryStore(Store):
    """Entries in a dict guarded by a lock; expiry is checked on access and swept every second."""

    shared = False  # one process's memory
    ranks = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._slots: dict[str, _Slot] = {}
        self._indexes: dict[str, _Index] = {}
        self._ranked_lists: dict[str, dict[str, float]] = {}  # key -> member -> score
        self._ranked_keep: dict[str, int] = {}  # key -> how many members it keeps
        self._counters: dict[str, tuple[dict[str, int], float]] = {}  # key -> counts, expiry
        self._lock = threading.Lock()
        self._last_purge = time.monotonic()
        # expired keys (with the hold generation seen then) whose local Events need releasing
        self._dead: list[tuple[str, int | None]] = []

    def after_fork(self) -> None:
        super().after_fork()
        self._lock = threading.Lock()  # the entries stay: a child may read what its parent wrote

    def _live(self, key: str, now: float) -> _Slot | None:
        """The slot if present and unexpired (caller holds the lock)."""
        slot = self._slots.get(key)
        if slot is not None and slot.ttl and slot.expires_at <= now:
            del self._slots[key]
            self._dead.append((key, self.events.generation(key)))
            return None
        return slot

    def _purge(self, now: float) -> None:
        """Drop every expired slot, at most once a second (caller holds the lock)."""
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        for key in [k for k, s in self._slots.items() if s.ttl and s.expires_at <= now]:
            self._live(key, now)
        for key in [k for k, i in self._indexes.items() if i.expires_at <= now]:
            del self._indexes[key]
        for key in [k for k, (_c, at) in self._counters.items() if at <= now]:
            del self._counters[key]

    def _locked(self, op: Callable[[float], Any]) -> Any:
        """Run ``op`` under the lock, then release the Events of entries found expired."""
        now = time.monotonic()
        with self._lock:
            result = op(now)
            self._purge(now)
            dead, self._dead = self._dead, []
        for key, generation in dead:
            self.events.release(key, generation)
        return result

    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        ttl = ttl_ms / 1000

        def op(now: float) -> None:
            # Versions are never reused, even by a replacement after a removal: no ABA.
            self._slots[key] = _Slot(text, ttl, now + ttl, False, next(_VERSIONS))

        self._locked(op)

    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        def op(now: float) -> list[tuple[str, bool] | None]:
            out: list[tuple[str, bool] | None] = []
            for key in keys:
                slot = self._live(key, now)
                if slot is None:
                    out.append(None)
                    continue
                if refresh:
                    slot.expires_at = now + slot.ttl
                out.append((slot.text, slot.cancelled))
            return out

        result: list[tuple[str, bool] | None] = self._locked(op)
        return result

    def _write(self, key: str, text: str) -> Found:
        def op(now: float) -> Found:
            slot = self._live(key, now)
            if slot is None:
                return Found.MISSING
            slot.text, slot.expires_at, slot.version = text, now + slot.ttl, slot.version + 1
            return Found.of(slot.cancelled)

        result: Found = self._locked(op)
        return result

    def _update(self, key: str, apply: Callable[[str], str]) -> Found:
        # Optimistic, like the Redis store's versioned swap: ``apply`` runs outside the lock.
        while True:
            with self._lock:
                slot = self._live(key, time.monotonic())
                if slot is None:
                    return Found.MISSING
                text, version = slot.text, slot.version
            new_text = apply(text)

            def op(
                now: float, version: int = version, new_text: str = new_text
            ) -> tuple[bool, bool | None]:
                current = self._live(key, now)
                if current is None:
                    return True, None
                if current.version != version:
                    return False, None
                current.text, current.expires_at = new_text, now + current.ttl
                current.version += 1
                return True, current.cancelled

            done, flag = self._locked(op)
            if done:
                return Found.of(flag)

    def _swap_known(
        self, key: str, expected: str, text: str, forget: tuple[str, str] | None
    ) -> tuple[Found | None, bool]:
        def op(now: float) -> Found | None:
            if forget is not None:
                index = self._index(forget[0], now)
                if index is not None:
                    index.active.discard(forget[1])
                    index.recent.pop(forget[1], None)
            slot = self._live(key, now)
            if slot is None:
                return Found.MISSING
            if slot.text != expected:
                return None
            slot.text, slot.expires_at, slot.version = text, now + slot.ttl, slot.version + 1
            return Found.of(slot.cancelled)

        found: Found | None = self._locked(op)
        return found, forget is not None

    def _cancel(self, key: str) -> bool:
        def op(now: float) -> bool:
            slot = self._live(key, now)
            if slot is None:
                return False
            slot.cancelled = True
            slot.expires_at = now + slot.ttl
            return True

        result: bool = self._locked(op)
        return result

    def _remove(self, key: str) -> bool:
        result: bool = self._locked(lambda now: self._slots.pop(key, None) is not None)
        return result

    def _exists(self, key: str) -> bool:
        result: bool = self._locked(lambda now: self._live(key, now) is not None)
        return result

    def _keys(self, kind: str) -> list[str]:
        start = self.key(kind, "")[:-1]  # "<prefix>{<kind>:"

        def op(now: float) -> list[str]:
            return [k for k in list(self._slots) if k.startswith(start) and self._live(k, now)]

        result: list[str] = self._locked(op)
        return result

    def _touch(self, keys: list[str]) -> list[str]:
        def op(now: float) -> list[str]:
            missing = []
            for key in keys:
                slot = self._live(key, now)
                if slot is None:
                    missing.append(key)
                else:
                    slot.expires_at = now + slot.ttl
            return missing

        return self._locked(op)

    # -- indexes -------------------------------------------------------------

    def _index(self, key: str, now: float, create: bool = False) -> _Index | None:
        index = self._indexes.get(key)
        if index is not None and index.expires_at <= now:
            del self._indexes[key]
            index = None
        if index is None and create:
            index = self._indexes[key] = _Index(set(), {}, now)
        return index

    def _claim(
        self, key: str, member: str, limit: int, keep: int, score: float, ttl_ms: int
    ) -> bool:
        def op(now: float) -> bool:
            index = self._index(key, now, create=True)
            assert index is not None
            if len(index.active) >= limit:
                return False
            index.active.add(member)
            index.recent[member] = score
            excess = len(index.recent) - len(index.active) - keep
            for old in sorted(index.recent, key=index.recent.__getitem__):
                if excess <= 0:
                    break
                if old not in index.active:
                    del index.recent[old]
                    excess -= 1
            index.expires_at = now + ttl_ms / 1000
            return True

        result: bool = self._locked(op)
        return result

    def _unclaim(self, key: str, members: list[str], ttl_ms: int) -> None:
        def op(now: float) -> None:
            index = self._index(key, now)
            if index is not None:
                index.active.difference_update(members)
                index.expires_at = now + ttl_ms / 1000

        self._locked(op)

    def _claims(self, key: str, ttl_ms: int) -> tuple[list[str], list[str]]:
        def op(now: float) -> tuple[list[str], list[str]]:
            index = self._index(key, now)
            if index is None:
                return [], []
            index.expires_at = now + ttl_ms / 1000
            recent = sorted(index.recent, key=index.recent.__getitem__, reverse=True)
            return list(index.active), recent

        result: tuple[list[str], list[str]] = self._locked(op)
        return result

    def _forget(self, key: str, members: list[str]) -> None:
        def op(now: float) -> None:
            index = self._index(key, now)
            if index is not None:
                index.active.difference_update(members)
                for member in members:
                    index.recent.pop(member, None)

        self._locked(op)

    def _touch_claims(self, keys: list[str], ttl_ms: int) -> None:
        def op(now: float) -> None:
            for key in keys:
                index = self._index(key, now)
                if index is not None:
                    index.expires_at = now + ttl_ms / 1000

        self._locked(op)

    # -- counters ----------------------------------------------------------------

    def _tally(self, key: str, changes: list[tuple[str, int]], ttl_ms: int) -> None:
        def op(now: float) -> None:
            counts, at = self._counters.get(key, ({}, 0.0))
            counts = dict(counts) if at > now else {}
            for name, delta in changes:
                counts[name] = counts.get(name, 0) + int(delta)
            self._counters[key] = (counts, now + ttl_ms / 1000)

        self._locked(op)

    def _tallies(self, keys: list[str]) -> list[dict[str, int]]:
        def op(now: float) -> list[dict[str, int]]:
            found = [self._counters.get(key) for key in keys]
            return [dict(f[0]) if f is not None and f[1] > now else {} for f in found]

        result: list[dict[str, int]] = self._locked(op)
        return result

    # -- ranked lists ----------------------------------------------------------

    def _rank(self, key: str, member: str, score: float, keep: int, floor: float | None) -> None:
        def op(now: float) -> None:
            members = self._ranked_lists.setdefault(key, {})
            members[member] = score
            self._ranked_keep[key] = keep
            if floor is not None:
                for old in [m for m, s in members.items() if s < floor]:
                    del members[old]
            excess = len(members) - keep
            # Trimmed in batches (a pass over the list per keep/8 additions, not per one:
            # a start must not cost a scan of the thousand newest jobs); readers never see
            # more than ``keep`` (see _ranked).
            if excess > max(keep // 8, 0):  # drop the lowest (ties: the lesser member)
                for old in heapq.nsmallest(excess, members, key=lambda m: (members[m], m)):
                    del members[old]
            if not members:
                del self._ranked_lists[key]

        self._locked(op)

    def _ranked(self, key: str, count: int) -> list[str]:
        def op(now: float) -> list[str]:
            members = self._ranked_lists.get(key, {})
            shown = min(count, self._ranked_keep.get(key, count))  # the batch not trimmed yet
            if len(members) > 2 * shown:  # the newest few of many: no full sort
                return heapq.nlargest(shown, members, key=lambda m: (members[m], m))
            return sorted(members, key=lambda m: (members[m], m), reverse=True)[:shown]

        result: list[str] = self._locked(op)
        return result

    def _unrank(self, key: str, members: list[str]) -> None:
        def op(now: float) -> None:
            found = self._ranked_lists.get(key)
            if found is not None:
                for member in members:
                    found.pop(member, None)
                if not found:
                    del self._ranked_lists[key]

        self._locked(op)
