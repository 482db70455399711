"""What a store keeps in this process only: cancel Events, change watchers, per-key turns.

Each has its own lock. A cancel must set the Event of the process that holds
the entry (:class:`CancelEvents`); a push stream waits for an entry to change
(:class:`Watchers`); threads of one process take turns per key in ``update``
(:class:`KeyTurns`), so optimistic retries only happen between processes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator


class CancelEvents:
    """The ``threading.Event`` this process holds per key, with a generation per hold.

    A release decided on an older read must not drop a hold made since (an entry
    re-created after a Redis restart holds its Event again): pass the
    generation seen before the read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[threading.Event, int]] = {}
        self._generations = itertools.count(1)

    def hold(self, key: str, event: threading.Event) -> None:
        with self._lock:
            self._held[key] = (event, next(self._generations))

    def release(self, key: str, generation: int | None = None) -> None:
        """Drop the hold of ``key``; with ``generation``, only if nobody re-held it since."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and (generation is None or held[1] == generation):
                del self._held[key]

    def deliver(self, key: str) -> None:
        """Set the Event held for ``key``, if any."""
        with self._lock:
            held = self._held.get(key)
        if held is not None:
            held[0].set()

    def generation(self, key: str) -> int | None:
        with self._lock:
            held = self._held.get(key)
        return None if held is None else held[1]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def __bool__(self) -> bool:
        return bool(self._held)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def after_fork(self) -> None:
        """A forked child holds none of its parent's Events (its jobs did not come along)."""
        self._lock = threading.Lock()
        self._held = {}


class Watchers:
    """Events to set when an entry is written or cancelled (push updates)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, set[threading.Event]] = {}
        self._seq: dict[str, int] = {}  # notifications per watched key

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._by_key.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                watchers = self._by_key.get(key)
                if watchers is not None:
                    watchers.discard(event)
                    if not watchers:
                        del self._by_key[key]
                        self._seq.pop(key, None)

    def notify(self, key: str) -> None:
        with self._lock:
            watchers = list(self._by_key.get(key, ()))
            if watchers:
                self._seq[key] = self._seq.get(key, 0) + 1
        for event in watchers:
            event.set()

    def seq(self, key: str) -> int:
        """How many notifications ``key`` had while watched: a read taken after the n-th
        one is as fresh as any other read until the next (what streams of one job share)."""
        with self._lock:
            return self._seq.get(key, 0)

    def watched(self, key: str) -> int:
        """How many watchers ``key`` has."""
        with self._lock:
            return len(self._by_key.get(key, ()))

    def key_set(self) -> set[str]:
        """The keys that have watchers."""
        with self._lock:
            return set(self._by_key)

    def keys(self) -> int:
        """How many keys have watchers."""
        with self._lock:
            return len(self._by_key)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._by_key = {}
        self._seq = {}


class KeyTurns:
    """A lock per key, dropped when no thread uses it any more."""

    def __init__(self) -> None:
        self.after_fork()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list[object]] = {}

    @contextlib.contextmanager
    def turn(self, key: str, timeout: float) -> Iterator[bool]:
        """Wait up to ``timeout`` s for this thread's turn on ``key``; yields whether it got it.

        The timeout keeps a nested update on another key from deadlocking: after
        it, the caller goes on optimistically.
        """
        with self._lock:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = [threading.RLock(), 0]
            entry[1] += 1  # type: ignore[operator]
        lock: threading.RLock = entry[0]  # type: ignore[assignment]
        locked = lock.acquire(timeout=timeout)
        try:
            yield locked
        finally:
            if locked:
                lock.release()
            with self._lock:
                entry[1] -= 1  # type: ignore[operator]
                if not entry[1]:
                    del self._locks[key]
