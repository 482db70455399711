"""Server-Sent Events: push a job's progress document to the browser as it changes.

The stream waits on the store's change notifications (Redis pub/sub, or local
for the memory store) and re-reads the document at least once a second in case
a notification was missed. It sends the document whenever it differs, a
``: ping`` comment every ``sse_ping_interval`` seconds (which also
finds a closed page, freeing the server thread), an ``end`` event after a
final status, and after ``sse_max_age`` seconds a ``reconnect``
event (the widget opens a new stream) before it closes, so no stream holds a
server thread for long, nor delays a graceful shutdown.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .status import FINAL

if TYPE_CHECKING:
    from .runtime import Runtime

#: How long the stream waits for a notification before it reads anyway.
_FALLBACK_READ = 1.0
#: Longest a read is shared by the streams of one job when no notification came between.
_SHARED_FOR = 0.5


class SharedReads:
    """One store read per job and wake-up in this process, whatever its number of streams.

    A document read after a job's n-th change notification is handed to every local
    stream of that job until the next notification (or for ``_SHARED_FOR`` seconds), so
    a write costs one read here, not one per open stream.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[int, float, dict[str, Any] | None]] = {}
        self._limit = limit

    def status(self, app_state: Runtime, job_id: str) -> dict[str, Any] | None:
        key = app_state.records.job_key(job_id)
        seq = app_state.store.watchers.seq(key)  # before the read: a later write bumps it
        now = time.monotonic()
        with self._lock:
            hit = self._docs.get(job_id)
        if hit is not None and hit[0] == seq and now - hit[1] < _SHARED_FOR:
            return hit[2]
        doc = app_state.records.status(job_id)
        with self._lock:
            if len(self._docs) >= self._limit and job_id not in self._docs:
                self._docs.clear()  # bounded: jobs come and go
            self._docs[job_id] = (seq, now, doc)
        return doc


_shared: weakref.WeakKeyDictionary[Any, SharedReads] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def _reads(app_state: Runtime) -> SharedReads:
    with _shared_lock:
        found = _shared.get(app_state)
        if found is None:
            found = _shared[app_state] = SharedReads()
        return found


def _event(data: Any, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def progress_stream(app_state: Runtime, job_id: str) -> Iterator[str]:
    """Yield SSE frames for one job until it ends, vanishes, or the stream grows too old."""
    settings = app_state.settings
    now = time.monotonic()
    deadline = now + settings.tuning.sse_max_age
    next_ping = now + settings.tuning.sse_ping_interval
    last: dict[str, Any] | None = None
    reads = _reads(app_state)
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
                    yield _event({"error": "no such job in this session"}, "end")
                    return
                if doc != last:
                    yield _event(doc)
                    last = doc
                if doc["status"] in FINAL:
                    yield _event(doc, "end")
                    return
            now = time.monotonic()
            if now >= deadline:  # free this server thread; the browser opens a new stream
                yield _event({"reason": "stream lifetime reached"}, "reconnect")
                return
            if now >= next_ping:
                yield ": ping\n\n"
                next_ping = now + settings.tuning.sse_ping_interval
            changed.wait(min(_FALLBACK_READ, deadline - now, next_ping - now))
