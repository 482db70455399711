"""Server-Sent Events: push a job's progress document to the browser as it changes, in a
bounded number of open streams.

:func:`progress_stream` writes the frames of one ``<prefix>/events/<token>`` stream. It
waits on the store's change notifications (Redis pub/sub, or local for the memory
store) and re-reads the document at least once a second in case a notification was
missed. It sends the document whenever it differs, a ``: ping`` comment every
``sse_ping_interval`` seconds (which also finds a closed page, freeing the
server thread), an ``end`` event after a final status, and after
``sse_max_age`` seconds a ``reconnect`` event (the widget opens a new stream)
before it closes, so no stream holds a server thread for long, nor delays a graceful
shutdown. The streams of one job share their reads (:class:`SharedReads`).

Its ``message`` and ``end`` events carry the document as JSON; given ``render``, they
carry ``render(doc)`` instead (``/events/<token>?format=html``: the widget's HTML
fragment, for htmx's SSE extension), and the other events stay as they are.

:class:`StreamSlots` bounds the open streams of this process, in all and per owner:
each holds a server thread (or greenlet) for up to ``sse_max_age`` seconds,
so one browser, or a flood of them, could otherwise take every thread of a worker. A
refused stream is answered 429 and the widget polls instead. By default
(``ASYNCSTATE_MAX_STREAMS = None``) streams are on only where one costs no thread: a
process whose sockets gevent or eventlet patched. On a threaded server (gunicorn
``gthread``, ``sync``, waitress, the dev server) they are off and every widget polls,
so streams can never take the threads other pages need.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .status import FINAL

if TYPE_CHECKING:
    from .appstate import AppState

#: How long the stream waits for a notification before it reads anyway.
_FALLBACK_READ = 1.0
#: Longest a read is shared by the streams of one job when no notification came between.
_SHARED_FOR = 0.5
#: Longest a stream waits for the read another stream of its job is making.
_SHARED_WAIT = 5.0


class SharedReads:
    """One store read per job and wake-up in this process, whatever its number of streams.

    A document read after a job's n-th change notification is handed to every local
    stream of that job until the next notification (or for ``_SHARED_FOR`` seconds), so
    a write costs one read here, not one per open stream. The streams a notification
    wakes together wait for the one read the first of them makes (a read yields to the
    others under gevent; without this they would each miss the cache and read too).
    """

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, _Read] = {}
        self._limit = limit

    def status(self, app_state: AppState, job_id: str) -> dict[str, Any] | None:
        key = app_state.records.job_key(job_id)
        seq = app_state.store.watchers.seq(key)  # before the read: a later write bumps it
        now = time.monotonic()
        with self._lock:
            hit = self._docs.get(job_id)
            if hit is None or hit.seq != seq or now - hit.at >= _SHARED_FOR:
                if len(self._docs) >= self._limit and job_id not in self._docs:
                    self._docs.clear()  # bounded: jobs come and go
                mine = self._docs[job_id] = _Read(seq, now)
                hit = None
        if hit is not None:
            # Wait for it only where waiting yields to it: greenlets whose sockets were
            # patched but not threading would block the one OS thread they all run on.
            if _waits_yield() and hit.ready.wait(_SHARED_WAIT):
                if isinstance(hit.failed, StoreError):  # the store is away for us too
                    raise StoreError(f"the shared read failed: {hit.failed}")
                if hit.failed is None:
                    return hit.doc
            return app_state.records.status(job_id)  # that read hangs or broke: our own
        try:
            mine.doc = app_state.records.status(job_id)
        except BaseException as exc:
            mine.failed = exc
            with self._lock:  # nothing to share: the next wake-up reads again
                if self._docs.get(job_id) is mine:
                    del self._docs[job_id]
            raise
        finally:
            mine.ready.set()
        return mine.doc


class _Read:
    """One shared read: set ``ready`` once ``doc`` (or ``failed``) is known."""

    __slots__ = ("at", "doc", "failed", "ready", "seq")

    def __init__(self, seq: int, at: float) -> None:
        self.seq, self.at = seq, at
        self.doc: dict[str, Any] | None = None
        self.failed: BaseException | None = None
        self.ready = threading.Event()


def _event(data: Any, name: str | None = None) -> str:
    return _text_event(json.dumps(data, separators=(",", ":")), name)


def _text_event(text: str, name: str | None = None) -> str:
    """A frame whose data is ``text``: one ``data:`` line per line of it (an event's data
    ends at the first blank line, so a line break cannot end it early)."""
    head = f"event: {name}\n" if name else ""
    lines = "".join(f"data: {line}\n" for line in text.splitlines() or [""])
    return f"{head}{lines}\n"


#: What a stream's ``message`` and ``end`` events carry for a document (None: the job is
#: gone): the text of their ``data``.
Render = Callable[[dict[str, Any] | None], str]


def handed_over(text: str) -> str:
    """A whole stream of one ``message`` event carrying ``text``, then ``end``: what an htmx
    widget gets for a stream it may not have (see ``views.events``)."""
    return "retry: 2000\n\n" + _text_event(text) + _text_event("", "end")


def progress_stream(
    app_state: AppState, job_id: str, render: Render | None = None
) -> Iterator[str]:
    """Yield SSE frames for one job until it ends, vanishes, or the stream grows too old.

    ``render``: what the ``message`` and ``end`` events carry instead of the JSON document.
    """

    def document(doc: dict[str, Any], name: str | None = None) -> str:
        return _event(doc, name) if render is None else _text_event(render(doc), name)

    settings = app_state.settings
    now = time.monotonic()
    deadline = now + settings.tuning.sse_max_age
    next_ping = now + settings.tuning.sse_ping_interval
    last: dict[str, Any] | None = None
    reads = app_state.streams.reads
    with app_state.store.watch(app_state.records.job_key(job_id)) as changed:
        yield "retry: 2000\n\n"
        while True:
            changed.clear()
            try:
                doc = reads.status(app_state, job_id)
            except StoreError:  # the store is away: keep the stream open, read again shortly
                yield _event({"error": "the job store is unavailable, retrying"}, "unavailable")
            else:
                if doc is None:
                    if render is None:
                        yield _event({"error": "no such job in this session"}, "end")
                    else:
                        yield _text_event(render(None), "end")
                    return
                if doc != last:
                    yield document(doc)
                    last = doc
                if doc["status"] in FINAL:
                    yield document(doc, "end")
                    return
            now = time.monotonic()
            if now >= deadline:  # free this server thread; the browser opens a new stream
                yield _event({"reason": "stream lifetime reached"}, "reconnect")
                return
            if now >= next_ping:
                yield ": ping\n\n"
                next_ping = now + settings.tuning.sse_ping_interval
            changed.wait(min(_FALLBACK_READ, deadline - now, next_ping - now))


# -- the limits on open streams --------------------------------------------------------


class StreamSlots:
    """The open streams of one app in this process: :meth:`acquire` refuses one beyond
    ``total`` or ``per_owner``, and :attr:`reads` is the document reads they share.

    A slot is released when its response is closed. One that is never closed (a
    server that skips ``close()``) is reclaimed after ``lifetime`` seconds, longer
    than any stream lives.
    """

    #: Streams per process by default where a stream costs no thread (gevent, eventlet).
    GREEN_TOTAL = 1000

    def __init__(self, total: int | None, per_owner: int, lifetime: float) -> None:
        #: None: decided at the first stream, by :func:`green_server` (see the module).
        self.total = total
        self.per_owner = per_owner
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._open: dict[int, tuple[str, float]] = {}  # slot id -> (owner, opened at)
        self._next = 0
        #: One store read per job and wake-up, whatever the number of its streams.
        self.reads = SharedReads()

    def on(self) -> bool:
        """Whether this process serves streams at all (the default is decided at the first
        ask, late: gunicorn's gevent worker patches before it loads the app)."""
        if self.total is None:
            self.total = self.GREEN_TOTAL if green_server() else 0
        return self.total > 0

    def acquire(self, owner: str) -> Slot | None:
        if not self.on():
            return None
        total = self.total or 0
        now = time.monotonic()
        with self._lock:
            for sid, (_o, opened) in list(self._open.items()):
                if now - opened > self.lifetime:
                    del self._open[sid]
            mine = sum(1 for o, _t in self._open.values() if o == owner)
            if len(self._open) >= total or mine >= self.per_owner:
                return None
            self._next += 1
            self._open[self._next] = (owner, now)
            return Slot(self, self._next)

    def release(self, sid: int) -> None:
        with self._lock:
            self._open.pop(sid, None)

    def count(self) -> int:
        """Streams open in this process now."""
        with self._lock:
            return len(self._open)


def _waits_yield() -> bool:
    """Whether a ``threading.Event`` wait here lets the stream being waited for go on: OS
    threads, or greenlets with threading patched too (not sockets alone)."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return bool(gevent_monkey.is_module_patched("threading"))
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("socket"):
        return bool(eventlet_patcher.is_monkey_patched("thread"))
    return True


def green_server() -> bool:
    """Whether this process serves requests on greenlets: gevent or eventlet patched its
    sockets, so an open stream waits without holding an OS thread."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return True
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    return eventlet_patcher is not None and bool(eventlet_patcher.is_monkey_patched("socket"))


class Slot:
    """One admitted stream; wrap its frames so that closing the response frees the slot."""

    def __init__(self, slots: StreamSlots, sid: int) -> None:
        self._slots, self._sid = slots, sid

    def wrap(
        self, frames: Iterator[str], context: Callable[[], AbstractContextManager[Any]]
    ) -> _Stream:
        return _Stream(frames, self, context)

    def release(self) -> None:
        self._slots.release(self._sid)


class _Stream:
    """The response body: each frame is produced inside ``context``; ``close`` frees the slot."""

    def __init__(
        self, frames: Iterator[str], slot: Slot, context: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        self._frames, self._slot, self._context = frames, slot, context

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> str:
        try:
            with self._context():
                return next(self._frames)
        except BaseException:
            self._slot.release()  # ended (or failed): the slot is free at once
            raise

    def close(self) -> None:
        try:
            close = getattr(self._frames, "close", None)
            if close is not None:
                with self._context():
                    close()
        finally:
            self._slot.release()
