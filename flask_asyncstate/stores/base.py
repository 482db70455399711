"""The store contract: JSON documents by key, sliding expiry, a separate cancel flag, local Events.

:class:`Store` holds everything the backends share: the public operations, the key
layout, encoding and the size cap, and what one process keeps for itself (below). A
backend implements the storage hooks at the end of :class:`Store` (each says its
contract; ``_write`` and ``_update`` answer a :class:`Found`). A backend whose writes
already notify watchers in every process (Redis publishes them) sets
``notifies_changes = True``. A third-party backend is plugged in with
``ASYNCSTATE_STORE`` (an instance or an import string).

Key layout: ``<prefix>{<kind>:<name>}``. The braces are a Redis Cluster hash
tag, so everything about one entry lives in one slot. The cancel flag is kept
beside the document (never inside it), so writing a document can never erase a
cancel request.

Besides entries, a backend keeps bounded indexes: an owner's jobs (:meth:`Store.claim`)
and *ranked lists* (:meth:`Store.rank`), members ordered by a score and capped in size,
what the operator's page reads instead of scanning every entry. A backend without ranked
lists leaves :attr:`Store.ranks` False, and readers scan as they did before them.

What a store keeps in this process only, each behind its own lock: a cancel must set
the Event of the process that holds the entry (:class:`CancelEvents`); a push stream
waits for an entry to change (:class:`Watchers`); threads of one process take turns per
key in ``update`` (:class:`KeyTurns`), so optimistic retries only happen between
processes.

Who is calling the store, a web request (short waits, fail fast) or background work
(patient), is :func:`on_request_path`; the Redis store picks its client by it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from flask import has_request_context

from .. import serialization
from ..errors import StateTooLarge, StoreError

__all__ = ["Claims", "Entry", "Found", "Store", "on_request_path", "request_path"]

log = logging.getLogger("flask_asyncstate")

#: Default sliding expiry in seconds (``ASYNCSTATE_EXPIRES``).
DEFAULT_EXPIRES = 900
#: Default cap on one encoded entry in bytes (the ``max_entry_size`` tuning keyword).
DEFAULT_MAX_ENTRY_SIZE = 64 * 1024
#: Seconds a thread waits for its turn on a key before it updates optimistically anyway.
_UPDATE_LOCK_TIMEOUT = 1.0


# -- what a conditional write found, an entry as read back, an owner's job index --


class Found(Enum):
    """What a conditional write found: no entry, or one with or without a cancel request."""

    MISSING = "missing"
    PRESENT = "present"
    CANCEL_REQUESTED = "cancel-requested"

    @classmethod
    def of(cls, flag: bool | None) -> Found:
        """From a backend's ``None`` (missing) / cancel flag."""
        if flag is None:
            return cls.MISSING
        return cls.CANCEL_REQUESTED if flag else cls.PRESENT


@dataclass(frozen=True)
class Claims:
    """An owner's job index: the unfinished ids (what a quota counts) and the recent ones."""

    active: set[str]
    #: Newest first: every active id plus the newest finished ones.
    recent: list[str]


@dataclass(frozen=True)
class Entry:
    """One stored entry as read back: the document and whether a cancel was requested."""

    data: dict[str, Any]
    cancel_requested: bool


class Store(ABC):
    """Shared logic of every backend; see the module docstring for the contract."""

    #: Writes reach the watchers of every process by themselves (Redis pub/sub); otherwise
    #: the base tells this process's watchers after each write.
    notifies_changes: ClassVar[bool] = False
    #: Every process opening the store sees the same entries (RQ and Celery workers need it).
    shared: ClassVar[bool] = True
    #: The backend keeps ranked lists (:meth:`rank`); without them readers scan every entry.
    ranks: ClassVar[bool] = False

    def __init__(
        self,
        *,
        key_prefix: str = "asyncstate:",
        expires: float = DEFAULT_EXPIRES,
        max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
    ) -> None:
        if expires <= 0:
            raise ValueError("expires must be a positive number of seconds")
        self.key_prefix = key_prefix
        self.expires = expires
        #: Sliding expiry of the bounded indexes (an owner's jobs): at least ``expires``,
        #: longer when finished jobs are kept longer (``ASYNCSTATE_KEEP_FINISHED``).
        self.index_expires = expires
        self.max_entry_size = max_entry_size
        #: The cancel Events this process holds.
        self.events = CancelEvents()
        #: Watchers of entry changes in this process (push updates).
        self.watchers = Watchers()
        self._turns = KeyTurns()

    # -- keys --------------------------------------------------------------

    def key(self, kind: str, name: str | None = None) -> str:
        """The storage key of the entry ``kind`` + optional ``name``."""
        return f"{self.key_prefix}{{{kind}:{name or ''}}}"

    # -- public operations -------------------------------------------------

    def create(
        self,
        key: str,
        data: dict[str, Any],
        *,
        cancel_event: threading.Event | None = None,
        never_expires: bool = False,
        ttl: float | None = None,
        member: str = "",
        claims: Sequence[tuple[str, int, int]] = (),
        ranks: Sequence[tuple[str, float, int]] = (),
    ) -> list[bool]:
        """Add or replace the entry at ``key`` (a replaced entry's cancel flag is cleared).

        Then, in order, ``member`` is claimed in each index of ``claims`` (index key,
        limit, keep: as :meth:`claim`) and ranked in each list of ``ranks`` (list key,
        score, keep: as :meth:`rank`), in the same round trip where the backend can: what
        a start needs before anyone may see its job. Whether each claim was taken; every
        step is tried whatever the claims before it answered, so a caller that gives up
        on a refusal undoes the others.
        """
        text = self._encode(key, data)
        seconds = 0 if never_expires else (ttl if ttl is not None else self.expires)
        taken = self._create_with(
            key,
            text,
            int(seconds * 1000),
            member,
            list(claims),
            list(ranks),
            int(self.index_expires * 1000),
        )
        self._changed(key)
        if cancel_event is not None:
            self.hold(key, cancel_event)
        else:
            self.events.release(key)
        return taken

    def read(self, key: str, *, refresh: bool = True) -> Entry | None:
        """The entry at ``key``, or None; a read counts as use and restarts its expiry."""
        return self.read_many([key], refresh=refresh)[0]

    def read_many(self, keys: list[str], *, refresh: bool = True) -> list[Entry | None]:
        """Several entries in one round trip, in the order asked."""
        if not keys:
            return []
        generations = [self.events.generation(key) for key in keys]
        raws = self._read(keys, refresh)
        out: list[Entry | None] = []
        for key, generation, raw in zip(keys, generations, raws):
            if raw is None:
                self.events.release(key, generation)
                out.append(None)
                continue
            text, flag = raw
            if flag:
                self.events.deliver(key)
            out.append(Entry(serialization.loads(text), flag))
        return out

    def write(self, key: str, data: dict[str, Any]) -> bool:
        """Replace the document of an existing entry; False (and nothing written) if it is gone."""
        text = self._encode(key, data)
        generation = self.events.generation(key)
        return self._after_write(key, self._write(key, text), generation)

    def write_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        """:meth:`write` for several entries, in one round trip where the backend can."""
        if not items:
            return []
        texts = [self._encode(key, data) for key, data in items]  # all or nothing: before I/O
        keys = [key for key, _ in items]
        generations = [self.events.generation(key) for key in keys]
        found = self._write_many(keys, texts)
        return [self._after_write(k, f, g) for k, f, g in zip(keys, found, generations)]

    def update(
        self,
        key: str,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        expect: dict[str, Any] | None = None,
        forget: tuple[str, str] | None = None,
    ) -> bool:
        """Atomically replace the document with ``fn(document)``, retrying on conflict.

        ``fn`` may run more than once and must not have side effects beyond its result.
        Returns False when there is no entry (nothing is created).

        ``expect``: the document the caller believes is stored (a worker's job payload
        carries it): ``fn`` is applied to it and the result set without reading first, if
        the stored document is still exactly that; otherwise the usual read and retry.
        ``forget``: an index and a member to drop from it (:meth:`forget`), whatever the
        update finds, in the same round trip where the backend can.
        """

        def apply(text: str) -> str:
            return self._encode(key, fn(serialization.loads(text)))

        # Threads of this process take turns on a key, so optimistic retries only happen
        # between processes.
        generation = self.events.generation(key)
        found, forgot = None, False
        try:
            with self._turns.turn(key, _UPDATE_LOCK_TIMEOUT):
                if expect is not None:
                    expected = self._encode(key, expect)
                    try:
                        new_text: str | None = apply(expected)
                    except Exception:  # noqa: BLE001 - fn refuses it: ask fn about what is stored
                        new_text = None
                    if new_text is not None:
                        found, forgot = self._swap_known(key, expected, new_text, forget)
                if found is None:
                    found = self._update(key, apply)
        finally:  # also when fn refused what is stored, or the store failed
            if forget is not None and not forgot:
                self._forget_after(*forget)
        return self._after_write(key, found, generation)

    def _forget_after(self, index: str, member: str) -> None:
        """``update``'s ``forget`` as a step of its own. Its failure does not undo the update
        that was made: the member stays listed until the index's owner finds it stale."""
        try:
            try:
                self.forget(index, [member])
            except NotImplementedError:  # a backend without forget: inactive at least
                self.unclaim(index, [member])
        except StoreError as exc:
            log.debug("%s: %s not dropped from %s (%s)", type(self).__name__, member, index, exc)

    def cancel(self, key: str) -> bool:
        """Record a cancel request and set the entry's Event wherever it is held.

        True only when the entry exists. The request is stored, so a holder that
        missed the notification still sees it on its next read or write.
        """
        found = self._cancel(key)
        if found:
            self.events.deliver(key)
            self._changed(key)
        return found

    def remove(self, key: str) -> bool:
        """Delete the entry; True if there was one. Releases a local Event."""
        self.events.release(key)
        return self._remove(key)

    def exists(self, key: str) -> bool:
        """Whether the entry is live, without counting as use."""
        return self._exists(key)

    def keys(self, kind: str) -> list[str]:
        """Keys of every live entry of ``kind``."""
        return self._keys(kind)

    def touch(self, keys: Iterable[str]) -> list[str]:
        """Restart the expiry of entries in use that nobody reads (a long silent job); the
        keys found missing (lost in a failover or restart), if the backend can tell."""
        keys = list(keys)
        return (self._touch(keys) or []) if keys else []

    # -- bounded indexes (an owner's jobs) -------------------------------------

    def claim(self, key: str, member: str, *, limit: int, keep: int, score: float) -> bool:
        """Add ``member`` to the index at ``key`` as active, atomically, if fewer than ``limit`` are.

        The index also remembers up to ``keep`` inactive members (newest ``score``
        first); older ones drop off. Concurrent claims from any number of threads
        and processes accept exactly ``limit``. The index expires like an entry.
        """
        return self._claim(key, member, limit, keep, score, int(self.index_expires * 1000))

    def unclaim(self, key: str, members: Iterable[str]) -> None:
        """Mark members inactive (their work ended); they stay listed among the recent ones."""
        members = list(members)
        if members:
            self._unclaim(key, members, int(self.index_expires * 1000))

    def claims(self, key: str) -> Claims:
        """The index at ``key`` (empty if none); reading it restarts its expiry."""
        active, recent = self._claims(key, int(self.index_expires * 1000))
        return Claims(set(active), recent)

    def forget(self, key: str, members: Iterable[str]) -> None:
        """Drop members from the index at ``key`` altogether (no longer listed as recent)."""
        members = list(members)
        if members:
            self._forget(key, members)

    def _forget(self, key: str, members: list[str]) -> None:
        """Remove members from both the active and the recent ones; a backend that has
        indexes overrides it (the base cannot, so dismissing a job is refused)."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop members of an index")

    def touch_claims(self, keys: Iterable[str]) -> None:
        """Restart the expiry of indexes whose owners have work running."""
        keys = list(keys)
        if keys:
            self._touch_claims(keys, int(self.index_expires * 1000))

    # -- counters (a parent job's children) -----------------------------------------

    def tally(self, key: str, changes: dict[str, int]) -> None:
        """Add ``changes`` to the counters at ``key`` in one atomic step (a counter not there
        starts at 0). The counters expire like an index, each change restarting it."""
        if changes:
            self._tally(key, list(changes.items()), int(self.index_expires * 1000))

    def tallies(self, keys: list[str]) -> list[dict[str, int]]:
        """The counters at each key (empty where none), in one round trip; restarts nothing."""
        return self._tallies(keys) if keys else []

    def _tally(self, key: str, changes: list[tuple[str, int]], ttl_ms: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no counters")

    def _tallies(self, keys: list[str]) -> list[dict[str, int]]:
        raise NotImplementedError(f"{type(self).__name__} keeps no counters")

    # -- ranked lists (the newest jobs, the live instances) ----------------------

    def rank(
        self, key: str, member: str, score: float, *, keep: int, floor: float | None = None
    ) -> None:
        """Put ``member`` in the ranked list at ``key`` with ``score`` (moving it if listed),
        then keep only the ``keep`` highest-scored members and, with ``floor``, none scored
        below it.

        A ranked list is bounded by ``keep`` and never expires; a member whose entry is
        gone stays listed until it drops off (readers skip it).
        """
        self._rank(key, member, score, keep, floor)

    def ranked(self, key: str, count: int) -> list[str]:
        """Up to ``count`` members of the ranked list at ``key``, highest score first (ties:
        the greater member first); empty if there is none. Reading changes nothing."""
        return self._ranked(key, count) if count > 0 else []

    def unrank(self, key: str, members: Iterable[str]) -> None:
        """Drop members from the ranked list at ``key``."""
        members = list(members)
        if members:
            self._unrank(key, members)

    def _rank(self, key: str, member: str, score: float, keep: int, floor: float | None) -> None:
        """Add or move one member, then trim to ``keep`` (and ``floor``); a backend that has
        ranked lists overrides the three hooks and sets :attr:`ranks`."""
        raise NotImplementedError(f"{type(self).__name__} keeps no ranked lists")

    def _ranked(self, key: str, count: int) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} keeps no ranked lists")

    def _unrank(self, key: str, members: list[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no ranked lists")

    def after_fork(self) -> None:
        """In a forked child: fresh local locks and registries (a parent thread may hold one)."""
        self.events.after_fork()
        self.watchers.after_fork()
        self._turns.after_fork()

    def ensure_threads(self) -> None:
        """Restart background threads of this store that died (a supervisor calls it)."""

    def close(self) -> None:
        """Stop background threads and drop local Events."""
        self.events.clear()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[threading.Event]:
        """An Event set whenever the entry at ``key`` is written or cancelled, from any process.

        For push updates: wait on it, ``clear()`` it, then read. Notifications
        can be coalesced or (on Redis, while reconnecting) missed, so wait with a
        timeout and read anyway.
        """
        with self.watchers.watch(key) as event:
            self._on_watch()  # after the watcher counts: Redis subscribes to changes now
            yield event

    def watched_keys(self) -> int:
        """How many keys have watchers in this process (for tests and monitoring)."""
        return self.watchers.keys()

    def held_keys(self) -> list[str]:
        """Keys whose cancel Event this process holds."""
        return self.events.keys()

    def hold(self, key: str, event: threading.Event) -> None:
        """Set ``event`` when a cancel of ``key`` is requested, from any process."""
        self.events.hold(key, event)
        self._on_hold()

    def release(self, key: str) -> None:
        """Stop delivering cancels of ``key`` to this process (its work there is done)."""
        self.events.release(key)

    def _after_write(self, key: str, found: Found, generation: int | None) -> bool:
        if found is Found.MISSING:
            self.events.release(key, generation)
            return False
        if found is Found.CANCEL_REQUESTED:
            self.events.deliver(key)
        self._changed(key)
        return True

    def _changed(self, key: str) -> None:
        if not self.notifies_changes:
            self.watchers.notify(key)

    def _on_hold(self) -> None:
        """Called when an Event is registered; Redis starts its listener here."""

    def _on_watch(self) -> None:
        """Called when a watcher is registered; Redis starts its listener here."""

    def _encode(self, key: str, data: dict[str, Any]) -> str:
        if not isinstance(data, dict):
            raise TypeError(f"store documents are dicts, got {type(data).__name__}")
        text = serialization.dumps(data)
        size = len(text.encode("utf-8"))
        if size > self.max_entry_size:
            raise StateTooLarge(size, self.max_entry_size, key)
        return text

    # -- storage hooks -----------------------------------------------------

    @abstractmethod
    def _create(self, key: str, text: str, ttl_ms: int) -> None:
        """Replace the entry: document ``text``, flag cleared, expiry ``ttl_ms`` (0 = never)."""

    def _create_with(
        self,
        key: str,
        text: str,
        ttl_ms: int,
        member: str,
        claims: list[tuple[str, int, int]],
        ranks: list[tuple[str, float, int]],
        index_ttl_ms: int,
    ) -> list[bool]:
        """``_create``, then each claim and rank in order; a backend that can send them
        together overrides this (the entry must be written before the claims run)."""
        self._create(key, text, ttl_ms)
        now = time.time()
        taken = [
            self._claim(index, member, limit, keep, now, index_ttl_ms)
            for index, limit, keep in claims
        ]
        for ranked, score, keep in ranks:
            self._rank(ranked, member, score, keep, None)
        return taken

    @abstractmethod
    def _read(self, keys: list[str], refresh: bool) -> list[tuple[str, bool] | None]:
        """``(text, cancel_flag)`` per key or None; restart expiry when ``refresh``."""

    @abstractmethod
    def _write(self, key: str, text: str) -> Found:
        """Set the document if the entry exists (restarting its expiry); say what was found."""

    def _write_many(self, keys: list[str], texts: list[str]) -> list[Found]:
        """Several ``_write``s; a backend that can send them together overrides this."""
        return [self._write(key, text) for key, text in zip(keys, texts)]

    @abstractmethod
    def _update(self, key: str, apply: Callable[[str], str]) -> Found:
        """Compare-and-set loop around ``apply`` (which may run more than once)."""

    def _swap_known(
        self, key: str, expected: str, text: str, forget: tuple[str, str] | None
    ) -> tuple[Found | None, bool]:
        """Set ``text`` if the stored document is exactly ``expected``, in one step with no
        read before it, and drop ``forget``'s member from its index in that step: (what
        was found, None if the document is another; whether ``forget`` was done). A
        backend that cannot leaves both to :meth:`update` (the default)."""
        return None, False

    @abstractmethod
    def _cancel(self, key: str) -> bool:
        """Set the stored flag and notify every process; False if the entry is missing."""

    @abstractmethod
    def _remove(self, key: str) -> bool: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _keys(self, kind: str) -> list[str]: ...

    @abstractmethod
    def _touch(self, keys: list[str]) -> list[str] | None:
        """Restart expiries; the missing keys (or None if the backend cannot tell)."""

    @abstractmethod
    def _claim(
        self, key: str, member: str, limit: int, keep: int, score: float, ttl_ms: int
    ) -> bool:
        """Guarded add of an active member, then trim inactive ones beyond ``keep``; atomic."""

    @abstractmethod
    def _unclaim(self, key: str, members: list[str], ttl_ms: int) -> None: ...

    @abstractmethod
    def _claims(self, key: str, ttl_ms: int) -> tuple[list[str], list[str]]:
        """``(active, recent newest first)``; restarts the index's expiry."""

    @abstractmethod
    def _touch_claims(self, keys: list[str], ttl_ms: int) -> None: ...


# -- what one process keeps: cancel Events, change watchers, per-key turns ------


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

    def deliver(self, key: str, generation: int | None = None) -> None:
        """Set the Event held for ``key``, if any; with ``generation``, only if nobody re-held
        it since (a flag read for the last run must not cancel the next one)."""
        with self._lock:
            held = self._held.get(key)
        if held is not None and (generation is None or held[1] == generation):
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


@dataclass
class _Turn:
    """One key's lock and how many threads use it (the lock is dropped at zero)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0


class KeyTurns:
    """A lock per key, dropped when no thread uses it any more."""

    def __init__(self) -> None:
        self.after_fork()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, _Turn] = {}

    @contextlib.contextmanager
    def turn(self, key: str, timeout: float) -> Iterator[bool]:
        """Wait up to ``timeout`` s for this thread's turn on ``key``; yields whether it got it.

        The timeout keeps a nested update on another key from deadlocking: after
        it, the caller goes on optimistically.
        """
        with self._lock:
            turn = self._by_key.get(key)
            if turn is None:
                turn = self._by_key[key] = _Turn()
            turn.users += 1
        locked = turn.lock.acquire(timeout=timeout)
        try:
            yield locked
        finally:
            if locked:
                turn.lock.release()
            with self._lock:
                turn.users -= 1
                if not turn.users:
                    del self._by_key[key]


# -- who is calling: a web request or background work ----------------------------

_request_path: ContextVar[bool | None] = ContextVar("asyncstate_request_path", default=None)


def on_request_path() -> bool:
    """Whether store calls now serve a web request (short waits) or background work (patient).

    Inside a request by default; :func:`request_path` says so for code that
    answers a request outside its context (a streamed response).
    """
    forced = _request_path.get()
    return has_request_context() if forced is None else forced


@contextlib.contextmanager
def request_path(on: bool = True) -> Iterator[None]:
    """Treat the store calls in this block as request-path calls (or, with False, background)."""
    token = _request_path.set(on)
    try:
        yield
    finally:
        _request_path.reset(token)
